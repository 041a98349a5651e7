"""Entries of a dataset stay inside the dataset's folder.

A dataset's own files name the images and annotations it holds: a COCO
`file_name`, the lines of a Caffe list file, a VOC or KITTI split file, a
WIDER FACE block. A downloaded dataset whose entry reads `../../../home/me/
private.jpg`, an absolute path, or a symbolic link pointing out of the folder
would make make-lmdb copy that file into an LMDB (and eval or train read it).
So, by default, every path an entry names must resolve (symbolic links
followed, `..` collapsed) to a place inside the dataset's root folder; one
that does not is a FormatError naming the dataset file, its line when known,
and the entry. Users whose list files point elsewhere on purpose say so
(`--allow-outside-root`), and the check is skipped.

The root itself may be a symbolic link (a dataset mounted elsewhere): it is
resolved too, so only entries that leave it are refused.

Lowest layer: imports nothing from caffessd but `errors`. Readers call
`inside_root` (or FileDataset.contained) for every path an entry names.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

from caffessd.errors import FormatError

ALLOW_OPTION = "--allow-outside-root"


@lru_cache(maxsize=64)
def _resolved_root(root: str) -> str:
    return os.path.realpath(root)


def is_inside(path, root) -> bool:
    """True when `path` resolves to `root` or a place below it."""
    resolved = os.path.realpath(path)
    base = _resolved_root(os.fspath(root))
    return resolved == base or resolved.startswith(base.rstrip(os.sep) + os.sep)


def inside_root(path, root, *, source, entry: str, line: Optional[int] = None, allow_outside: bool = False,
                what: str = "entry") -> Path:
    """`path` (built from `entry` of the dataset file `source`) when it lies
    inside `root`; FormatError otherwise, unless `allow_outside`."""
    path = Path(path)
    if "\x00" in str(path):   # no file has such a name (and realpath refuses it)
        raise FormatError(source, f"{what} {entry!r} holds a NUL byte: not a file name", line)
    if allow_outside or is_inside(path, root):
        return path
    how = "is an absolute path" if os.path.isabs(entry) else (
        "climbs out with '..'" if ".." in Path(entry).parts else "leads through a link")
    raise FormatError(source, f"{what} {entry!r} {how} outside the dataset folder {root} "
                              f"({ALLOW_OPTION} reads it anyway)", line)
