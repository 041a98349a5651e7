"""Progress for long work (make-lmdb, eval, train, detect on folders): a line on
stderr with count, rate and ETA, redrawn in place on a terminal and printed at
most every few seconds otherwise (logs stay readable)."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """`with Progress(total, "writing", unit="img") as bar: bar.update()`.

    `total` may be None (unknown): then no ETA is shown. Nothing is drawn when
    `enabled` is False (e.g. a single image)."""

    def __init__(self, total: Optional[int], label: str, unit: str = "img", stream: Optional[TextIO] = None,
                 enabled: bool = True, interval: Optional[float] = None):
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.count = 0
        self.extra = ""
        self._start = time.perf_counter()
        # The first line comes after one interval: work that fails sooner prints no progress, so
        # its error stays the only line on stderr (work that completes prints its final count).
        self._last_draw = self._start
        self._drawn = False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.count / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1, extra: Optional[str] = None) -> None:
        self.count += n
        if extra is not None:
            self.extra = extra
        now = time.perf_counter()
        if self.enabled and now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw()

    def line(self) -> str:
        done = f"{self.count}/{self.total}" if self.total else f"{self.count}"
        text = f"{self.label}: {done} {self.unit}, {self.rate:.1f} {self.unit}/s"
        if self.total and self.rate > 0:
            text += f", ETA {_clock(max(self.total - self.count, 0) / self.rate)}"
        if self.extra:
            text += f", {self.extra}"
        return text

    def _draw(self, final: bool = False) -> None:
        self._drawn = True
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """The final count (work that completed)."""
        if self.enabled and self.count:
            self._draw(final=True)
        self.enabled = False

    def abandon(self) -> None:
        """Work failed or was interrupted: no final line; on a terminal the bar is
        erased, so the error that follows stands alone."""
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, kind, *exc) -> None:
        self.abandon() if kind is not None else self.close()
