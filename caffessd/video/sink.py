"""The annotated video: H.264 (libx264) in MP4, at the frame rate of what was
detected, the source's frame size.

Written to a hidden temporary name beside the target and renamed when closed,
so the target is either a whole, playable video or absent (an interrupted run
closes it properly first: caffessd.video.outputs). The MP4 index is moved to
the front on close (`+faststart`), so a browser plays it while it downloads.
H.264 in 4:2:0 needs even sizes: an odd width or height gains one column or
row repeating the last."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np

from caffessd.errors import FormatError
from caffessd.video.source import require_av

# x264 "veryfast" at CRF 23: about 2x the speed of its default preset at a
# modest size cost (scripts/benchmark_video.py measures the encoder's share).
ENCODER_OPTIONS = {"preset": "veryfast", "crf": "23"}
_BT601 = 6      # AVCOL_SPC_SMPTE170M: the matrix swscale converts RGB with by default


class VideoSink:
    """`write(bgr, time)` per frame, then `close()` (or `abort()`)."""

    def __init__(self, path, width: int, height: int, rate: Optional[Fraction]):
        av = require_av()

        self.path = Path(path)
        self.rate = Fraction(rate or 25).limit_denominator(1001)
        self.width, self.height = width + width % 2, height + height % 2
        self.temporary = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial.mp4")
        self.frames = 0
        self._last_pts = -1
        self._origin: Optional[float] = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self.temporary), "w", format="mp4", options={"movflags": "+faststart"})
        except (av.error.FFmpegError, OSError) as exc:
            raise FormatError(self.path, f"cannot write the annotated video ({exc})") from None
        stream = self.container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.codec_context.time_base = 1 / self.rate
        stream.codec_context.colorspace = _BT601
        stream.options = dict(ENCODER_OPTIONS)
        self.stream = stream

    def write(self, bgr: np.ndarray, time: float) -> None:
        """Encode one HxWx3 BGR frame shown at `time` seconds of the source;
        its time in the output is counted from the first frame, on the
        output rate's grid (strictly increasing)."""
        import av

        if self._origin is None:
            self._origin = time
        pts = max(round((time - self._origin) * self.rate), self._last_pts + 1)
        self._last_pts = pts
        bgr = _even(bgr, self.width, self.height)
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
        frame.pts = pts
        frame.time_base = 1 / self.rate
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder, finish the file and put it in place."""
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
        except BaseException:
            self.abort()
            raise
        os.replace(self.temporary, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial video (an error stopped the run)."""
        try:
            self.container.close()
        except Exception:  # the muxer may refuse to finish a broken file; it is deleted anyway
            pass
        self.temporary.unlink(missing_ok=True)


def _even(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pad (edge rows/columns repeated) or crop to the sink's size: odd sizes,
    or a live stream whose frame size changed."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return np.ascontiguousarray(image)
    image = image[:height, :width]
    pad = ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0))
    return np.ascontiguousarray(np.pad(image, pad, mode="edge"))
