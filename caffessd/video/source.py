"""Decoding video with PyAV (FFmpeg's own bindings): files, network streams
(rtsp://, http(s)://, udp://, tcp://, ...), a pipe (`-`: stdin) and V4L2
cameras (/dev/videoN), as BGR frames like the images detect reads.

Each frame gets a position (`index`) and a presentation time in seconds from
the stream's start (`time`, exact from its timestamp). For files and pipes the
position follows the timestamps: a frame lost to corrupt data leaves a gap
(counted as missing) instead of shifting every later index, so the frames
after damage keep the numbers they have in the intact video. A live source
(camera, or a stream with no known duration) numbers frames as they come and
is reopened a bounded number of times when it stalls, fails or ends.
"""
from __future__ import annotations

import re
import threading
import time as clock
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from caffessd.errors import CaffessdError, FormatError
from caffessd.util.outputs import file_name_for
from caffessd.video.sampling import KEEP, STOP, FrameSampler

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
                  ".asf", ".mpg", ".mpeg", ".vob", ".3gp", ".ogv", ".y4m", ".h264", ".264", ".h265", ".265",
                  ".hevc", ".mjpeg", ".mjpg"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CAMERA = re.compile(r"^/dev/video\d+$")
_RESTART = "restart"
_FILE_READ_ERRORS = 10      # consecutive read errors after which a file is given up


@dataclass(frozen=True)
class SourceSpec:
    """What the user named (`text`) and how FFmpeg opens it."""

    text: str
    kind: str                   # "file", "pipe", "url" or "camera"
    target: str                 # what av.open receives
    format: Optional[str] = None

    @classmethod
    def parse(cls, text) -> "SourceSpec":
        text = str(text)
        if text == "-":
            return cls(text, "pipe", "pipe:0")
        if _CAMERA.match(text):
            return cls(text, "camera", text, "v4l2")
        if text.lower().startswith("file://"):
            return cls(text, "file", text[len("file://"):])
        if _URL.match(text):
            return cls(text, "url", text)
        return cls(text, "file", text)

    @property
    def stem(self) -> str:
        """A file-name stem for outputs named after the source."""
        if self.kind == "pipe":
            return "stdin"
        if self.kind == "file":
            return Path(self.target).stem or "video"
        if self.kind == "camera":
            return Path(self.target).name
        return file_name_for(_URL.sub("", self.text), "stream")


def is_video_source(text) -> bool:
    """A URL, `-`, a camera device or a file with a video suffix."""
    spec = SourceSpec.parse(text)
    return spec.kind != "file" or Path(spec.target).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Frame:
    """One decoded frame: its position in the source, its presentation time
    (seconds from the stream's start) and its pixels (HxWx3 uint8 BGR, turned
    upright when the stream carries a display rotation)."""

    index: int
    time: float
    image: np.ndarray
    exact_time: Fraction = field(default=Fraction(0), repr=False)


@dataclass
class ReadStats:
    """What happened while reading (read by the progress line while it grows)."""

    decoded: int = 0        # frames the decoder delivered
    undecodable: int = 0    # packets the decoder rejected and frames it flagged corrupt
    missing: int = 0        # positions absent from the timeline (files and pipes)
    truncated: int = 0      # frames short of the file's declared length at its end
    read_errors: int = 0    # container read errors skipped over (files)
    reconnects: int = 0     # times a live source was reopened

    @property
    def skipped(self) -> int:
        """Frames lost to corrupt or missing data: the timeline's gaps where
        there is a timeline, else the decoder's rejections."""
        return max(self.missing, self.undecodable)


class StreamLost(FormatError):
    """A live source that could not be reopened within its reconnect attempts."""


def require_av():
    """PyAV, or one line saying how to get it."""
    try:
        import av
    except ImportError:
        raise CaffessdError("reading and writing video needs PyAV: pip install 'caffessd[video]' "
                            "(or pip install av)") from None
    return av


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return str(text).strip().rstrip(".").lower()


class VideoReader:
    """An open video source; `frames(sampler)` yields the chosen Frames.

    Opening happens here, so a missing file, a file that is no video or a
    stream that cannot be reached is a FormatError before any work starts.
    `reconnect` is how many times in a row a live source is reopened
    (waiting `reconnect_delay` seconds, doubling up to 8 s) before it is
    given up; `timeout` (seconds) bounds a network stall."""

    def __init__(self, source, *, reconnect: int = 3, timeout: float = 10.0, reconnect_delay: float = 1.0,
                 on_note: Optional[Callable[[str], None]] = None):
        self.spec = source if isinstance(source, SourceSpec) else SourceSpec.parse(source)
        self.reconnect = max(0, int(reconnect))
        self.timeout = timeout
        self.reconnect_delay = reconnect_delay
        self.on_note = on_note or (lambda text: None)
        self.stats = ReadStats()
        self.container = None
        self._open()
        self.rate = self._rate()
        self.live = self.spec.kind == "camera" or (self.spec.kind == "url" and self.container.duration is None)
        self.declared_frames = None if self.live or self.spec.kind == "pipe" else self._declared_frames()
        self._origin: Optional[int] = None     # pts of time 0 in the open container
        self._offset = Fraction(0)             # time added after a live source was reopened
        self._last_time: Optional[Fraction] = None
        self._last_index = -1
        self._last_wall = 0.0
        self._seeked = False

    @property
    def name(self) -> str:
        return self.spec.text

    # -- opening --------------------------------------------------------------------------------

    def _open(self) -> None:
        av = require_av()

        spec = self.spec
        if spec.kind == "file":
            path = Path(spec.target)
            if not path.exists():
                raise FormatError(spec.text, "no such file")
            if not path.is_file():
                raise FormatError(spec.text, "is not a file")
        kwargs = {"timeout": (self.timeout, self.timeout)} if spec.kind in ("url", "camera") else {}
        try:
            container = av.open(spec.target, format=spec.format, **kwargs)
        except (av.error.FFmpegError, OSError) as exc:
            what = "cannot open the stream" if spec.kind in ("url", "camera", "pipe") else "cannot open as a video"
            raise FormatError(spec.text, f"{what} ({_reason(exc)})") from None
        if not container.streams.video:
            container.close()
            raise FormatError(spec.text, "has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"     # FFmpeg's frame and slice threads decode ahead
        self.container, self.stream = container, stream
        self._origin = None

    def _rate(self) -> Optional[Fraction]:
        for rate in (self.stream.average_rate, self.stream.guessed_rate, self.stream.base_rate):
            if rate:
                return Fraction(rate).limit_denominator(1001)
        return None

    def _declared_frames(self) -> Optional[int]:
        """The length the container claims (frames, or duration x rate), to tell a truncated file."""
        if self.stream.frames:
            return int(self.stream.frames)
        seconds = None
        if self.stream.duration is not None and self.stream.time_base:
            seconds = self.stream.duration * self.stream.time_base
        elif self.container.duration is not None:
            seconds = Fraction(self.container.duration, 1_000_000)
        return round(seconds * self.rate) if seconds and self.rate else None

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # closing a failed network container can raise; nothing is left to save
                pass
            self.container = None

    # -- frames ---------------------------------------------------------------------------------

    def frames(self, sampler: Optional[FrameSampler] = None, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        """The frames `sampler` keeps, in order; ends at the end of a file or
        pipe, when the sampler's range is over, or when `stop` is set."""
        sampler = sampler or FrameSampler()
        failures = 0
        try:
            if sampler.start > 0 and self.spec.kind == "file":
                self._seek(sampler.start)
            while True:
                delivered = self.stats.decoded
                outcome = yield from self._session(sampler, stop)
                if outcome == STOP or (stop is not None and stop.is_set()):
                    return
                if outcome == _RESTART:
                    continue
                if not self.live:
                    self._finish_file(outcome)
                    return
                if self.stats.decoded > delivered:
                    failures = 0
                failures = self._reopen(outcome or "the stream ended", failures, stop)
                if failures is None:
                    return
        finally:
            self.close()

    def _session(self, sampler: FrameSampler, stop) -> Iterator[Frame]:
        """Frames of the open container. Returns None at its end, STOP when the
        sampler's range is over, _RESTART after a seek that overshot, or the
        reason reading failed."""
        import av

        demux = self.container.demux(self.stream)
        errors = 0
        while True:
            if stop is not None and stop.is_set():
                return STOP
            try:
                packet = next(demux)
            except StopIteration:
                return None
            except (av.error.FFmpegError, OSError) as exc:
                if self.live:
                    return _reason(exc)
                errors += 1
                self.stats.read_errors += 1
                if errors >= _FILE_READ_ERRORS:
                    return _reason(exc)
                demux = self.container.demux(self.stream)
                continue
            errors = 0
            try:
                decoded = packet.decode()
            except (av.error.FFmpegError, OSError):   # corrupt data: this packet's frame is lost
                self.stats.undecodable += 1
                continue
            for frame in decoded:
                outcome = yield from self._deliver(frame, sampler)
                if outcome is not None:
                    return outcome

    def _deliver(self, frame, sampler: FrameSampler):
        if frame.is_corrupt:
            self.stats.undecodable += 1
            return None
        first = self._last_index < 0
        index, time = self._place(frame)
        if self._seeked and first and time > sampler.start:
            # The seek landed after --start (a stream without a keyframe index): read from the top.
            self._rewind()
            return _RESTART
        decision = sampler.decide(index, time)
        if decision == STOP:
            return STOP
        if decision == KEEP:
            yield Frame(index, float(time), _upright(frame), time)
        return None

    def _place(self, frame):
        """(index, time) of a decoded frame; updates the timeline and its gap count."""
        self.stats.decoded += 1
        step = 1 / self.rate if self.rate else Fraction(1, 25)
        if frame.pts is None or frame.time_base is None:
            time = self._last_time + step if self._last_time is not None else self._offset
        else:
            if self._origin is None:
                start = self.stream.start_time
                self._origin = start if start is not None and not self.live else frame.pts
            time = self._offset + (frame.pts - self._origin) * frame.time_base
        counts_gaps = not self.live and self.rate is not None
        if self._last_index < 0:
            index = max(0, round(time * self.rate)) if counts_gaps else 0
            if counts_gaps and not self._seeked:
                self.stats.missing += index    # frames before the first decodable one
        else:
            gap = (time - self._last_time) * self.rate if counts_gaps else 1
            index = self._last_index + (round(gap) if gap > Fraction(3, 2) else 1)
            self.stats.missing += index - self._last_index - 1
        self._last_index, self._last_time, self._last_wall = index, time, clock.monotonic()
        return index, time

    def _seek(self, start: Fraction) -> None:
        """Jump to the keyframe at or before `start` (frames before it are then skipped)."""
        import av

        base = self.stream.time_base
        if not base:
            return
        target = int(start / base) + (self.stream.start_time or 0)
        try:
            self.container.seek(target, stream=self.stream, backward=True)
            self._seeked = True
        except (av.error.FFmpegError, OSError):
            pass    # not seekable: decode from the top, skipping frames before --start

    def _rewind(self) -> None:
        self.close()
        self._open()
        self._seeked = False
        self._last_index, self._last_time = -1, None

    def _finish_file(self, failure: Optional[str]) -> None:
        """At the end of a file or pipe: say if it stopped early (read failure, truncation)."""
        last = self._last_index + 1
        if failure is not None:
            self.on_note(f"{self.name}: reading stopped after frame {self._last_index} ({failure})")
        if self.declared_frames and last < self.declared_frames:
            self.stats.truncated = self.declared_frames - last
            self.on_note(f"{self.name}: ends after {last} of the {self.declared_frames} frames its header "
                         f"declares (truncated?); {self.stats.truncated} frame(s) missing at the end")

    def _reopen(self, reason: str, failures: int, stop) -> Optional[int]:
        """Reopen a live source, waiting longer after each failed attempt;
        StreamLost after `reconnect` attempts in a row; None when `stop` is set."""
        while True:
            failures += 1
            if failures > self.reconnect:
                raise StreamLost(self.name, f"{reason}; gave up after {self.reconnect} reconnect attempt(s) "
                                            f"(--reconnect)")
            self.on_note(f"{self.name}: {reason}; reconnecting (attempt {failures} of {self.reconnect})")
            delay = min(self.reconnect_delay * 2 ** (failures - 1), 8.0)
            if stop is not None and stop.wait(delay):
                return None
            if stop is None:
                clock.sleep(delay)
            self.close()
            try:
                self._open()
            except FormatError as exc:
                reason = exc.message
                continue
            self.stats.reconnects += 1
            # Live time goes on from the last frame, plus the time spent reconnecting.
            if self._last_time is not None:
                self._offset = self._last_time + Fraction(clock.monotonic() - self._last_wall).limit_denominator(1000)
            return failures


def _upright(frame) -> np.ndarray:
    """The frame as BGR pixels, turned as its display matrix says (phones
    store portrait video sideways), as images are turned by their EXIF tag."""
    image = frame.to_ndarray(format="bgr24")
    turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    if turns:
        image = np.rot90(image, turns)     # rotation is counter-clockwise, as np.rot90
    return np.ascontiguousarray(image)
