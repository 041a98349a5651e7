"""Importing a library as if one of its optional dependencies were absent.

    with unimportable("torch"):
        import nncf       # nncf takes its no-torch path

Libraries guard their optional imports with `try: import x / except
ImportError`; a None entry in sys.modules makes `import x` raise exactly
that. A module this process already loaded is left alone (someone uses it),
and the name is importable again once the block ends.
"""
from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def unimportable(name: str):
    """`import name` raises ImportError inside the block, unless the process
    had already imported it."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None
    try:
        yield
    finally:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
