"""Output paths that cannot destroy inputs: one rule for every command.

Commands name their outputs from options, and a mistyped option must not
destroy what is being read: `quantize M.onnx -o M.onnx`, `detect --json
W.caffemodel`, `make-lmdb DIR -o DIR --overwrite` (which would delete the
dataset), `--name-size` naming an annotation, `export-onnx -o
dir/missing/../deploy.prototxt` (which is dir/deploy.prototxt, the input).

The rule, `check_outputs(outputs, inputs)`: every path is resolved fully
(symbolic links followed, `..` collapsed, also after a folder that does not
exist yet, where the kernel would refuse it and `mkdir -p` would leave that
folder behind), and an output is refused when it

- *is* an input (the same file, by device and inode when it exists, links
  included, else by its resolved path);
- *contains* an input, for outputs the command replaces or removes as a
  whole (`Output(..., replaces=True)`: make-lmdb's OUT with --overwrite);
- *lies inside* an input read as a whole (`Input(..., sealed=True)`: an LMDB
  folder, where no report, picture or model may be written).

Writers use `write_path(path)` (the parent resolved, the name kept), so no
folder named on the way to `..` is ever created. A folder given where a file
prefix is expected means "files inside it" (`is_folder_target`).

Lowest layer: imports nothing from caffessd but `errors`. New commands call
`check_outputs` with every output and every input they know of, before any
long work.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Tuple, Union

from caffessd.errors import FormatError

PathLike = "str | os.PathLike"


@dataclass(frozen=True)
class Output:
    """An output path; `replaces`: the command removes or replaces this folder as a whole."""

    label: str
    path: object
    replaces: bool = False


@dataclass(frozen=True)
class Input:
    """An input path; `sealed`: a folder read as a whole (an LMDB), nothing may be written inside it."""

    label: str
    path: object
    sealed: bool = False


def resolved(path) -> Path:
    """`path` with links followed and every `..` collapsed (see the module's docstring)."""
    return Path(os.path.realpath(os.fspath(path)))


def write_path(path) -> Path:
    """Where a file output really goes: its folder resolved, its name kept (a
    link at the name is replaced by the new file, as a rename does)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        return resolved(path)
    return resolved(path.parent) / path.name


def file_key(path):
    """Identity of a file: (device, inode) when it exists (links included),
    else its fully resolved path."""
    target = resolved(path)
    try:
        info = os.stat(target)
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        return ("path", os.path.normcase(str(target)))


def same_file(a, b) -> bool:
    return file_key(a) == file_key(b)


def _is_within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def check_outputs(outputs: Iterable[Union[Output, Tuple[str, object]]],
                  inputs: Iterable[Union[Input, Tuple[str, object]]]) -> None:
    """FormatError naming the first output that is, contains (when it
    `replaces`) or lies inside (a `sealed` input) an input. Linear in the
    number of paths (detect may read thousands of images); outputs and inputs
    given as None are skipped."""
    outputs = [o if isinstance(o, Output) else Output(*o) for o in outputs]
    inputs = [i if isinstance(i, Input) else Input(*i) for i in inputs]
    outputs = [o for o in outputs if o.path]
    inputs = [i for i in inputs if i.path]
    if not outputs or not inputs:
        return
    by_key = {}
    for item in inputs:
        by_key.setdefault(file_key(item.path), item)
    sealed = {str(resolved(i.path)): i for i in inputs if i.sealed}
    for out in outputs:
        item = by_key.get(file_key(out.path))
        if item is not None:
            verb = "is" if os.path.isdir(out.path) else "would overwrite"
            raise FormatError(out.path, f"{out.label} {verb} the {item.label} being read; choose another "
                                        f"output path")
        target = str(resolved(out.path))
        for folder in _ancestors(target) if sealed else ():
            if folder in sealed:
                raise FormatError(out.path, f"{out.label} lies inside the {sealed[folder].label} {sealed[folder].path} "
                                            f"being read; choose another output path")
        if out.replaces:
            for item in inputs:
                if _is_within(str(resolved(item.path)), target):
                    raise FormatError(out.path, f"{out.label} would replace a folder holding the {item.label} "
                                                f"{item.path}; choose another output path")


def _ancestors(path: str):
    current = path
    while True:
        yield current
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def refuse_overwriting(outputs: Iterable[Tuple[str, object]], inputs: Iterable[Tuple[str, object]]) -> None:
    """FormatError when an output (label, path) is one of the inputs (label, path)."""
    check_outputs(outputs, inputs)


def is_folder_target(text) -> bool:
    """An existing folder, or a path written with a trailing separator."""
    text = os.fspath(text)
    return text.endswith(("/", os.sep)) or os.path.isdir(text)


def file_name_for(name: Optional[str], fallback: str) -> str:
    """A file name from a net's `name:` (odd characters become _), else `fallback`."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "").strip("._")[:100]
    return cleaned or fallback
