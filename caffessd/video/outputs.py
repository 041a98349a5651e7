"""What a video run writes: JSON Lines (one line per frame, flushed as it is
produced, so a consumer can follow a live stream) and the annotated video,
both on one writer thread, in frame order.

A frame's JSON line is written after the frame went into the video, so when
a run stops (Ctrl-C, SIGTERM, a lost stream) and the video is closed, the
lines describe exactly the frames the video holds."""
from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Optional, Sequence

from caffessd.errors import FormatError
from caffessd.image.draw import WHITE, draw_caption, draw_detections
from caffessd.video.sink import VideoSink

_QUEUE = 4      # frames waiting for the writer: bounds memory, lets inference run ahead


class JsonLines:
    """A JSON Lines file opened at its first record (no empty file is left
    when nothing was found to write), each line flushed as written."""

    def __init__(self, path):
        self.path = Path(path)
        self.lines = 0
        self._handle = None
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        text = json.dumps(record, separators=(", ", ": ")) + "\n"
        with self._lock:
            if self._handle is None:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._handle = open(self.path, "w", encoding="utf-8")
                except OSError as exc:
                    raise FormatError(self.path, f"cannot write ({exc.strerror or exc})") from None
            self._handle.write(text)
            self._handle.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def frame_record(result, source: str) -> dict:
    """The JSON line of one frame (caffessd.video.pipeline.FrameResult)."""
    record = {"file": source, "frame": result.index, "time": round(result.time, 6),
              "width": int(result.image.shape[1]), "height": int(result.image.shape[0]),
              "detections": [d.to_dict() for d in result.detections]}
    if result.counts is not None:
        record["counts"] = result.counts
    return record


def render(result, lines: Sequence = ()):
    """The annotated frame (a BGR copy): boxes, track ids, counting lines and counts."""
    image = draw_detections(result.image.copy(), result.detections, [line.points for line in lines])
    y = 0
    counts = result.counts or {}
    for line, per_line in counts.items():     # the running counts, stacked at the top left
        for name, counted in per_line.items():
            where = f"[{line}] " if len(counts) > 1 else ""
            text = f"{where}{name}: in {counted['in']}  out {counted['out']}"
            y += draw_caption(image, text, 0, y, (0, 0, 0), WHITE, above=False) + 2
    return image


class FrameWriter:
    """Draws, encodes and logs frames on a background thread.

    `submit(result)` queues a frame (blocking when the writer is behind, so
    memory stays flat); `close()` finishes the video and returns its path
    (None without one); `abort()` drops a partial video. An error on the
    writer thread (disk full) comes out of the next submit or close."""

    def __init__(self, source: str, video_path: Optional[Path], json_lines: Optional[JsonLines],
                 rate, lines: Sequence = ()):
        self.source = source
        self.video_path = Path(video_path) if video_path else None
        self.json_lines = json_lines
        self.rate = rate
        self.lines = list(lines)
        self.sink = None
        self.written = 0
        self._queue: "queue.Queue" = queue.Queue(maxsize=_QUEUE)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="caffessd-writer", daemon=True)
        self._thread.start()

    def submit(self, result) -> None:
        self._raise()
        self._queue.put(result)

    def _run(self) -> None:
        while True:
            result = self._queue.get()
            if result is None:
                return
            if self._error is not None:
                continue    # drain: the error is reported by the main thread
            try:
                self._write(result)
            except BaseException as exc:  # handed to the main thread
                self._error = exc

    def _write(self, result) -> None:
        if self.video_path is not None:
            if self.sink is None:
                height, width = result.image.shape[:2]
                self.sink = VideoSink(self.video_path, width, height, self.rate)
            self.sink.write(render(result, self.lines), result.time)
        if self.json_lines is not None:
            self.json_lines.write(frame_record(result, self.source))
        self.written += 1

    def _finish_thread(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            if self.sink is not None:
                self.sink.abort()
                self.sink = None
            raise error

    def close(self) -> Optional[Path]:
        self._finish_thread()
        self._raise()
        return self.sink.close() if self.sink is not None else None

    def abort(self) -> None:
        self._finish_thread()
        if self.sink is not None:
            self.sink.abort()
            self.sink = None
