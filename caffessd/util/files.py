"""File plumbing every writer shares: atomic writes (a temporary file in the
same folder, then a rename, so an error never leaves half a file behind),
checks that an output can be written before long work starts, and reading
a file with one error line naming it.

Lowest layer: imports nothing from caffessd but `errors`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Sequence, Tuple, Union

from caffessd.errors import FormatError
from caffessd.util.outputs import write_path

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, data: Union[bytes, str]) -> Path:
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    return atomic_write_many([(path, data)])[0]


def atomic_write_many(items: Sequence[Tuple[PathLike, Union[bytes, str]]]) -> List[Path]:
    """Write several files so that a failure leaves none of them half-written
    or new: every file goes to a temporary file first, and only when all of
    them are written are they renamed into place."""
    # `dir/missing/../x` is dir/x: written there, without creating `missing` on the way.
    targets = [(Path(path), write_path(path), data) for path, data in items]
    staged = []
    made = _missing_folders(target.parent for _, target, _ in targets)
    try:
        for path, target, data in targets:
            check_writable(path)
            staged.append((path, target, _stage(target, data, path)))
        for path, target, tmp in staged:
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise _write_error(path, exc) from None
    except BaseException:
        for _, _, tmp in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for folder in made:  # deepest first; only the ones this call created, and only if empty
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    return [path for path, _, _ in staged]


def _missing_folders(folders) -> List[Path]:
    """Folders (and their missing parents) that do not exist yet, deepest first."""
    missing = set()
    for folder in folders:
        folder = Path(os.path.abspath(folder))
        while not folder.exists() and folder != folder.parent:
            missing.add(folder)
            folder = folder.parent
    return sorted(missing, key=lambda p: len(p.parts), reverse=True)


def _stage(path: Path, data: Union[bytes, str], shown: Path = None) -> str:
    """A temporary file next to `path` holding `data`; returns its name.
    Errors name `shown` (the path as the user gave it), default `path`."""
    shown = shown if shown is not None else path
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(shown, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual mode
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(shown, exc) from None
        raise
    return tmp


def _write_error(path: PathLike, exc: OSError) -> FormatError:
    return FormatError(path, f"cannot write: {exc.strerror or exc}")


def check_writable(path: PathLike, folder: bool = False) -> None:
    """Fail, creating nothing, when `path` (a file, or with `folder` a folder)
    cannot be written: it is of the other kind, a parent is a file, or the
    nearest existing folder is read-only. Commands call this before long work."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise FormatError(path, "is a file, expected a folder")
    if not folder and path.is_dir():
        raise FormatError(path, "is a folder, expected a file")
    nearest = Path(os.path.abspath(path if folder else path.parent))
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise FormatError(path, f"cannot write: {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise FormatError(path, f"cannot write: folder {nearest} is not writable")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_bytes(path: PathLike) -> bytes:
    """The bytes of a file, with FormatError (naming it) when it is missing or a folder."""
    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such file")
    if path.is_dir():
        raise FormatError(path, "is a folder, expected a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FormatError(path, f"cannot read: {exc.strerror or exc}") from None
