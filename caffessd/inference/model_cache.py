"""The cache of converted models that `detect` keeps, made robust.

An entry is the .onnx file plus a `.sha256` file beside it, both written
atomically (temp name, then rename). On load the checksum is verified, and
the model's own metadata must name the source it was converted from (the
content hash of the prototxt, caffemodel and settings that also names the
entry); an entry that is truncated, empty, garbage, foreign (with or without
a checksum rewritten to match) or missing its checksum is rebuilt, saying so
in one line, instead of failing every later run or answering wrongly. Nothing
is cached that did not load and run once in onnxruntime. A cache folder that
cannot be written (read-only, full) is not an error: the model is converted
in memory and a warning says the next run will convert again.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from caffessd.errors import FormatError
from caffessd.util.files import atomic_write_many

CHECKSUM_SUFFIX = ".sha256"


@dataclass
class CachedModel:
    data: bytes                 # the ONNX model, verified
    path: Optional[Path]        # the cache entry; None when kept in memory only
    converted: bool             # converted in this call (not read from the cache)


def warn(message: str) -> None:
    """One line on stderr; the run goes on."""
    print(f"caffessd: warning: {message}", file=sys.stderr, flush=True)


def checksum_path(target: Path) -> Path:
    return target.with_name(target.name + CHECKSUM_SUFFIX)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_entry(target: Path) -> tuple:
    """(bytes, None) for a sound entry, (None, why) for a broken one, (None, None) for none."""
    sidecar = checksum_path(target)
    if not target.exists() and not sidecar.exists():
        return None, None
    try:
        data = target.read_bytes()
        expected = sidecar.read_text(encoding="ascii").split()[0]
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        return None, f"unreadable: {getattr(exc, 'strerror', None) or exc.__class__.__name__}"
    if digest(data) != expected:
        return None, f"checksum mismatch ({len(data)} bytes)"
    return data, None


def cached(target: Path, build: Callable[[], bytes], check: Callable[[bytes], None],
           belongs: Optional[Callable[[bytes], Optional[str]]] = None) -> CachedModel:
    """The entry at `target`, or `build()` checked by `check` (which raises
    when the model does not load and run) and stored when the folder allows.

    `belongs(data)` says why a checksum-sound entry is still not the model
    wanted (None: it is): an entry whose .sha256 was rewritten to match other
    bytes passes the checksum, not the model's own record of its source."""
    data, broken = read_entry(target)
    if data is not None and belongs is not None:
        broken = belongs(data)
        data = None if broken else data
    if data is not None:
        return CachedModel(data, target, False)
    if broken:
        warn(f"{target}: broken cache entry ({broken}); converting again")
    data = build()
    check(data)
    why_not = _unwritable(target.parent)
    if why_not is None:
        try:
            _write_entry(target, data)
            return CachedModel(data, target, True)
        except FormatError as exc:  # full disk, permissions changed meanwhile
            why_not = exc.message
    warn(f"{target.parent}: cannot cache the converted model ({why_not}); converted it in memory for this run")
    return CachedModel(data, None, True)


def _unwritable(folder: Path) -> Optional[str]:
    """Why `folder` cannot take a cache entry (None: it can). A file in the
    way is the user's mistake and stays an error."""
    nearest = Path(os.path.abspath(folder))
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise FormatError(folder, f"cannot write: {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        return f"folder {nearest} is not writable"
    return None


def _write_entry(target: Path, data: bytes) -> None:
    # The checksum names the bytes it belongs to, so a reader never trusts a
    # half-replaced pair: either both match or the entry is rebuilt.
    atomic_write_many([(target, data), (checksum_path(target), digest(data) + "\n")])
