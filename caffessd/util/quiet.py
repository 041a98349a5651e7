"""quiet_stderr: silence file descriptor 2 for a block.

Native libraries (LiteRT, TensorFlow's converter) write INFO lines straight
to fd 2, past Python's sys.stderr; caffessd's commands print one line of
their own instead. Errors still arrive as Python exceptions.
"""
from __future__ import annotations

import os
import sys


class quiet_stderr:
    """`with quiet_stderr(): ...` sends what native code writes to fd 2 to /dev/null."""

    def __enter__(self):
        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self.saved = None
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False
