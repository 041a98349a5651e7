"""Errors that the CLI turns into one line on stderr (no traceback)."""
from __future__ import annotations

import os


class CaffessdError(Exception):
    """A problem with the user's input or options, explained in one line."""


class FormatError(CaffessdError):
    """A file that is missing, unreadable or not in the expected format."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.message = message
        where = self.path or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


class UnsupportedLayerError(CaffessdError):
    """A layer type that a converter cannot express; `path` names the net's file."""

    def __init__(self, layer_name: str, layer_type: str, what: str = "supported", path=None):
        self.layer_name = layer_name
        self.layer_type = layer_type
        self.what = what
        self.path = os.fspath(path) if path is not None else None
        message = f"layer '{layer_name}' has type '{layer_type}', which is not {what}"
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def in_file(self, path) -> "UnsupportedLayerError":
        """The same error naming `path` (kept as is when it names a file already, or `path` is None)."""
        if self.path is not None or path is None:
            return self
        return UnsupportedLayerError(self.layer_name, self.layer_type, self.what, path)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, systemd and container runtimes send), raised in
    the main thread as Ctrl-C's KeyboardInterrupt is, so that every cleanup and
    "keep what is finished" path runs for it too; the CLI exits 143 for it."""

    signal_number = 15
