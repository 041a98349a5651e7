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
    """A layer type that a converter cannot express."""

    def __init__(self, layer_name: str, layer_type: str, what: str = "supported"):
        self.layer_name = layer_name
        self.layer_type = layer_type
        super().__init__(f"layer '{layer_name}' has type '{layer_type}', which is not {what}")
