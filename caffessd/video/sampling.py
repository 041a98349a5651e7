"""Which frames of a video are detected: --start, --duration, --every, --fps.

Times are exact fractions of seconds (a frame's pts times its stream's time
base), so a choice never depends on float rounding: `--fps 12` on a 30 fps
video keeps frames 0, 3, 5, 8, 10, ... every time."""
from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Optional

from caffessd.errors import CaffessdError

KEEP, SKIP, STOP = "keep", "skip", "stop"

_CLOCK = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")


def parse_time(text: str, option: str = "--start") -> Fraction:
    """'90', '1.5', '1:30', '0:01:30.5' -> seconds as an exact Fraction."""
    match = _CLOCK.match(str(text).strip())
    if not match:
        raise CaffessdError(f"{option} takes seconds or [HH:]MM:SS(.s), e.g. 90, 1.5 or 1:30, got '{text}'")
    hours, minutes, seconds = match.groups()
    return Fraction(int(hours or 0) * 3600 + int(minutes or 0) * 60) + Fraction(seconds)


def parse_rate(text: str, option: str = "--fps") -> Fraction:
    """'12', '12.5' or '30000/1001' -> frames per second, positive."""
    try:
        rate = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        rate = Fraction(0)
    if rate <= 0:
        raise CaffessdError(f"{option} takes a positive number of frames per second (e.g. 5, 12.5, 30000/1001), "
                            f"got '{text}'")
    return rate


class FrameSampler:
    """Decides for each decoded frame (its index and time) whether it is
    detected (KEEP), passed over (SKIP) or ends the video (STOP).

    - `start`, `duration`: the time range [start, start + duration).
    - `every` N: the first frame in range and every Nth position after it
      (positions, not decoded frames: a lost frame does not shift the choice).
    - `fps` F: the first frame of each 1/F-second slot, slots counted from
      the first frame in range; never more frames than the source has."""

    def __init__(self, every: Optional[int] = None, fps: Optional[Fraction] = None,
                 start: Fraction = Fraction(0), duration: Optional[Fraction] = None):
        if every is not None and fps is not None:
            raise CaffessdError("--every and --fps both choose frames: give one of them")
        if every is not None and every < 1:
            raise CaffessdError(f"--every takes a whole number of frames >= 1, got {every}")
        self.every = every
        self.fps = Fraction(fps) if fps is not None else None
        self.start = Fraction(start or 0)
        self.duration = Fraction(duration) if duration is not None else None
        self._first: Optional[tuple] = None
        self._last_slot: Optional[int] = None

    @property
    def end(self) -> Optional[Fraction]:
        return None if self.duration is None else self.start + self.duration

    def decide(self, index: int, time: Fraction) -> str:
        if time < self.start:
            return SKIP
        if self.end is not None and time >= self.end:
            return STOP
        if self._first is None:
            self._first = (index, time)
        first_index, first_time = self._first
        if self.every is not None:
            return KEEP if (index - first_index) % self.every == 0 else SKIP
        if self.fps is not None:
            slot = math.floor((time - first_time) * self.fps)
            if self._last_slot is not None and slot <= self._last_slot:
                return SKIP
            self._last_slot = slot
        return KEEP

    def output_rate(self, source_rate: Optional[Fraction]) -> Optional[Fraction]:
        """The frame rate of what is kept: the source's, / N, or F (at most the source's)."""
        if self.fps is not None:
            return min(self.fps, source_rate) if source_rate else self.fps
        if source_rate is None:
            return None
        return source_rate / self.every if self.every else source_rate

    def expected(self, source_frames: Optional[int], source_rate: Optional[Fraction]) -> Optional[int]:
        """How many frames will be kept from a source of `source_frames` frames at
        `source_rate` (for the progress line's ETA); None when unknown."""
        if not source_frames or not source_rate:
            return None
        first = min(source_frames, math.ceil(self.start * source_rate))
        last = source_frames if self.end is None else min(source_frames, math.ceil(self.end * source_rate))
        span = max(0, last - first)
        if self.every:
            return math.ceil(span / self.every)
        if self.fps is not None and self.fps < source_rate:
            return math.ceil(span * self.fps / source_rate)
        return span
