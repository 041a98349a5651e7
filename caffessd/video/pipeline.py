"""Detection over a video's frames, through the same pipeline as images.

    decode thread (caffessd.video.background: PyAV decodes and converts to BGR)
      -> Detector.detect_many (preprocessing on `workers` threads, `batch`
         frames per run, `streams` runs at once; results in order)
      -> tracker and line counter (here, in order)
      -> the caller (the CLI hands frames to caffessd.video.outputs' writer thread)

Every stage holds a bounded number of frames, so memory stays flat whatever
the video's length. Only the Detector's public detect_many is used, so any
engine behind a Detector runs videos too.

    from caffessd import Detector, detect_video
    for frame in detect_video(Detector(), "clip.mp4", every=2, track=True):
        print(frame.index, frame.time, [(d.name, d.track, d.box) for d in frame.detections])
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, List, Optional, Sequence, Union

import numpy as np

from caffessd.video.background import background
from caffessd.video.counting import CountingLine, LineCounter
from caffessd.video.outputs import frame_record
from caffessd.video.sampling import FrameSampler, parse_rate, parse_time
from caffessd.video.source import ReadStats, StreamLost, VideoReader
from caffessd.video.tracking import Sort

_DECODE_AHEAD = 2   # decoded frames waiting for preprocessing


@dataclass
class FrameResult:
    """One detected frame: its position and time in the source, its pixels
    (BGR), its detections (TrackedDetections with --track) and, when lines
    are counted, the counts so far ({line: {class: {"in": n, "out": m}}})."""

    source: str
    index: int
    time: float
    image: np.ndarray
    detections: list
    counts: Optional[dict] = None

    def to_dict(self) -> dict:
        return frame_record(self, self.source)


def _frame_pixels(frame) -> np.ndarray:
    return frame.image


class VideoDetection:
    """Iterating yields a FrameResult per chosen frame, in order.

    The source is opened here (a FormatError names it when it cannot be read).
    `every`/`fps` choose frames, `start`/`duration` (seconds, or '1:30'
    strings) a time range; `track` gives ids (SORT, caffessd.video.tracking);
    `count` takes lines ('X0,Y0,X1,Y1' or CountingLine) to count tracks
    crossing them (implies `track`); `batch`, `workers` and `streams` are
    detect_many's; `reconnect`/`timeout` bound a live source's stalls; a set
    `stop` Event ends the iteration after the frames in flight. `stats` and
    the reader's `rate`, `live` and `expected_frames` say what happened and
    what to expect."""

    def __init__(self, detector, source, *, every: Optional[int] = None, fps=None, start=None, duration=None,
                 track: bool = False, count: Sequence[Union[str, CountingLine]] = (), batch: Optional[int] = None,
                 workers: int = 2, streams: int = 1, reconnect: int = 3, timeout: float = 10.0,
                 reconnect_delay: float = 1.0, stop: Optional[threading.Event] = None,
                 on_note: Optional[Callable[[str], None]] = None, max_age: int = 30):
        self.detector = detector
        self.sampler = FrameSampler(every=every, fps=_rate(fps), start=_time(start, "--start"),
                                    duration=_time(duration, "--duration"))
        self.lines: List[CountingLine] = [line if isinstance(line, CountingLine) else CountingLine.parse(line)
                                          for line in count]
        self.tracker = Sort(max_age=max_age) if track or self.lines else None
        self.counter = LineCounter(self.lines) if self.lines else None
        self.options = {"batch": batch, "workers": workers, "streams": streams}
        self.stop = stop
        self.reader = VideoReader(source, reconnect=reconnect, timeout=timeout, reconnect_delay=reconnect_delay,
                                  on_note=on_note)
        self.source = self.reader.name
        self._started = False

    @property
    def stats(self) -> ReadStats:
        return self.reader.stats

    @property
    def rate(self) -> Optional[Fraction]:
        """The frame rate of the results (the source's, or what --every/--fps leave)."""
        return self.sampler.output_rate(self.reader.rate)

    @property
    def expected_frames(self) -> Optional[int]:
        """How many results a file will give (None for live sources and pipes)."""
        return self.sampler.expected(self.reader.declared_frames, self.reader.rate)

    def __iter__(self) -> Iterator[FrameResult]:
        if self._started:
            raise RuntimeError("a VideoDetection is iterated once; call detect_video again")
        self._started = True
        frames = background(self.reader.frames(self.sampler, self.stop), ahead=_DECODE_AHEAD, stop=self.stop)
        lost: List[StreamLost] = []
        try:
            for found in self.detector.detect_many(_until_lost(frames, lost), load=_frame_pixels, **self.options):
                yield self._result(found)
        finally:
            # The decode thread closes the container itself (never two threads on one container).
            frames.close()
        if lost:    # raised once the frames decoded before the loss came through
            raise lost[0]

    def close(self) -> None:
        """Close the source of a VideoDetection that was never iterated."""
        if not self._started:
            self.reader.close()

    def _result(self, found) -> FrameResult:
        frame = found.source
        detections = found.detections
        counts = None
        if self.tracker is not None:
            detections = self.tracker.update(detections)
        if self.counter is not None:
            self.counter.update(detections, self.tracker.live_ids)
            counts = self.counter.snapshot()
        return FrameResult(self.source, frame.index, frame.time, found.image, detections, counts)


def detect_video(detector, source, **options) -> VideoDetection:
    """Per-frame results of `detector` on a video file, stream URL, pipe ('-')
    or camera (/dev/videoN): iterate the returned VideoDetection for a
    FrameResult per frame. Options as VideoDetection's. `detector` is a
    caffessd Detector, or any engine object with its detect_many."""
    return VideoDetection(detector, source, **options)


def _until_lost(frames, lost: list):
    """The frames until a live source is lost for good; the StreamLost is kept
    in `lost` rather than raised, so the frames in flight are not dropped."""
    try:
        yield from frames
    except StreamLost as exc:
        lost.append(exc)


def _time(value, option: str) -> Optional[Fraction]:
    if value is None or isinstance(value, Fraction):
        return value
    return parse_time(str(value), option) if isinstance(value, str) else Fraction(value).limit_denominator(1_000_000)


def _rate(value) -> Optional[Fraction]:
    if value is None or isinstance(value, Fraction):
        return value
    text = value if isinstance(value, str) else str(Fraction(value).limit_denominator(1001))
    return parse_rate(text)
