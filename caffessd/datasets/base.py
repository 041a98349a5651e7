"""What every file-based reader shares: a cheap list of entries (names and
annotation locations, no pixels) and a per-entry parse into an ImageRecord.

Splitting the two lets make-lmdb shuffle and parallelise entries, and skip a
bad one (--skip-bad) without losing the rest of the dataset, while plain
iteration stays a stream of records."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

from caffessd.datasets.records import ImageRecord
from caffessd.errors import FormatError
from caffessd.util.dataset_paths import inside_root
from caffessd.util.files import read_bytes
from caffessd.datasets.images import decode_image


class FileDataset:
    """Base class of the readers. Subclasses set `root`, `classes` and
    `_entries`, and implement `record(entry)`."""

    root: Path
    classes: Sequence[str] = ()
    _entries: Sequence[Any] = ()
    allow_outside: bool = False   # --allow-outside-root: entries may name files outside `root`

    def entries(self) -> Sequence[Any]:
        """One opaque, cheap item per image, in the dataset's order."""
        return self._entries

    def record(self, entry: Any) -> ImageRecord:  # pragma: no cover - abstract
        raise NotImplementedError

    def files(self, entry: Any) -> Sequence[Path]:
        """The files an entry reads (annotation, image), as named, without
        touching the disk: what make-lmdb checks its outputs against."""
        return ()

    def dataset_files(self) -> Sequence[Path]:
        """Files read for every entry alike (a list file, a COCO JSON)."""
        return ()

    def contained(self, path: Path, entry: str, source: Path, line: Optional[int] = None,
                  root: Optional[Path] = None, what: str = "entry") -> Path:
        """`path`, named by `entry` of the dataset file `source`, when it lies
        inside the dataset folder (`root`, default the reader's root); see
        caffessd.util.dataset_paths."""
        return inside_root(path, root if root is not None else self.root, source=source, entry=entry, line=line,
                           allow_outside=self.allow_outside, what=what)

    def entry_name(self, entry: Any) -> str:
        """The image field of an entry (for messages before it is parsed)."""
        return str(entry)

    def label_ids(self) -> Optional[Mapping[str, int]]:
        """Label ids the format itself fixes (COCO category ids), or None to
        number `classes` 1..N after background 0 in a written labelmap."""
        return None

    def load_image(self, record: ImageRecord) -> np.ndarray:
        """The record's image as HxWx3 uint8 BGR (EXIF orientation applied)."""
        return decode_image(read_bytes(record.path), record.path)

    def __iter__(self) -> Iterator[ImageRecord]:
        for entry in self.entries():
            yield self.record(entry)

    def __len__(self) -> int:
        return len(self.entries())


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FormatError(path, f"no such folder ({what})")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FormatError(path, f"no such file ({what})")
    return path


def read_text(path: Path) -> str:
    try:
        return read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not UTF-8 text (byte {exc.start})") from None


def parse_number(text: str, path: Path, line: Optional[int], what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise FormatError(path, f"{what}: expected a number, got {text!r}", line) from None
    if not np.isfinite(value):
        raise FormatError(path, f"{what}: expected a finite number, got {text!r}", line)
    return value


def load_json(path: Path, data: Optional[str] = None):
    """json.loads with its errors (and a nesting deep enough to exhaust the
    parser's recursion) as one FormatError line naming the file."""
    try:
        return json.loads(read_text(path) if data is None else data)
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"malformed JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except RecursionError:
        raise FormatError(path, "JSON nested too deeply to be an annotation file") from None


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(folder: Path) -> list:
    """Image files under `folder` (recursively), sorted by their relative path."""
    found = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())
