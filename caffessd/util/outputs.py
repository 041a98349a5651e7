"""Output paths that cannot destroy inputs.

Commands name their outputs from options; a mistyped option must not
overwrite the caffemodel being converted (`export-onnx NET W.caffemodel -o
W.caffemodel`) or an image being read, and a folder given where a file
prefix is expected means "files inside it", not hidden `.prototxt` files or
a `DIR.prototxt` beside it.
"""
from __future__ import annotations

import os
import re
from typing import Iterable, Optional, Tuple

from caffessd.errors import FormatError

PathLike = "str | os.PathLike"


def file_key(path):
    """Identity of a file: (device, inode) when it exists (links included),
    else its normalised absolute path."""
    try:
        info = os.stat(path)
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        return ("path", os.path.normcase(os.path.abspath(path)))


def same_file(a, b) -> bool:
    return file_key(a) == file_key(b)


def refuse_overwriting(outputs: Iterable[Tuple[str, object]], inputs: Iterable[Tuple[str, object]]) -> None:
    """FormatError when an output (label, path) is one of the inputs (label, path).
    Linear in the number of paths (detect may read thousands of images)."""
    by_key = {file_key(path): label for label, path in inputs if path}
    for out_label, out in outputs:
        if not out:
            continue
        in_label = by_key.get(file_key(out))
        if in_label is not None:
            raise FormatError(out, f"{out_label} would overwrite the {in_label} being read; choose another "
                                   f"output path")


def is_folder_target(text) -> bool:
    """An existing folder, or a path written with a trailing separator."""
    text = os.fspath(text)
    return text.endswith(("/", os.sep)) or os.path.isdir(text)


def file_name_for(name: Optional[str], fallback: str) -> str:
    """A file name from a net's `name:` (odd characters become _), else `fallback`."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "").strip("._")[:100]
    return cleaned or fallback
