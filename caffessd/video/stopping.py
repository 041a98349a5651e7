"""Stopping a video run cleanly on Ctrl-C (SIGINT) or SIGTERM.

The first signal only sets an Event: the pipeline stops taking frames,
finishes the few in flight, closes the annotated video (playable) and the
JSON Lines, and the command exits 130 (SIGINT) or 143 (SIGTERM). A second
signal interrupts at once (KeyboardInterrupt)."""
from __future__ import annotations

import signal
import threading
from typing import Callable, Optional


class SignalStop:
    """`with SignalStop(say) as stopper: ... stopper.event ... stopper.exit_status`.

    Handlers are installed only on the main thread (Python's rule); elsewhere
    the Event can still be set by the caller."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, say: Optional[Callable[[str], None]] = None):
        self.event = threading.Event()
        self.signum: Optional[int] = None
        self.say = say or (lambda text: None)
        self._previous = {}

    @property
    def exit_status(self) -> Optional[int]:
        """128 + the signal's number (130 for SIGINT, 143 for SIGTERM); None when none came."""
        return 128 + self.signum if self.signum is not None else None

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()
        self.say(f"caffessd: {signal.Signals(signum).name}: finishing the frames in flight and closing the "
                 "outputs (again to quit at once)")

    def __enter__(self) -> "SignalStop":
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
