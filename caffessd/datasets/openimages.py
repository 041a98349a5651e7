"""Open Images boxes: `<split>-annotations-bbox.csv` (header ImageID, Source,
LabelName, Confidence, XMin, XMax, YMin, YMax, IsOccluded, IsTruncated,
IsGroupOf, IsDepiction, IsInside; coordinates normalised to the image),
class names from `class-descriptions-boxable.csv` (`MID,Display name`, with
or without the `LabelName,DisplayName` header of the v7 file), images as
`<split>/<ImageID>.jpg`.

The official files run to gigabytes, so the CSV is read once to index each
image's rows by byte offset, and an image's rows are parsed only when its
record is asked for: memory grows with the number of images, not of boxes.
`IsGroupOf` boxes (a box around a crowd of objects) are flagged `ignore`
and `difficult`, as COCO's crowd regions are. Only images that have a row
are in the dataset (the CSV does not list the others).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from caffessd.datasets.base import FileDataset, parse_number, read_text, require_file
from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.datasets.images import image_size
from caffessd.errors import FormatError

REQUIRED = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
FLAGS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")
DESCRIPTIONS = ("class-descriptions-boxable.csv", "oidv7-class-descriptions-boxable.csv",
                "oidv6-class-descriptions-boxable.csv", "class-descriptions.csv")
IMAGE_SUFFIX = ".jpg"


def _find(root: Path, names) -> Optional[Path]:
    for folder in (root, root / "annotations", root / "metadata"):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def read_descriptions(path: Path) -> Dict[str, str]:
    """{MID: display name} in the file's order."""
    names: Dict[str, str] = {}
    for number, row in enumerate(csv.reader(io.StringIO(read_text(path))), start=1):
        if not row:
            continue
        if len(row) < 2:
            raise FormatError(path, f"expected `MID,name`, got {len(row)} field(s)", number)
        if number == 1 and row[0] == "LabelName":
            continue
        names[row[0]] = row[1]
    return names


def _split_csv_line(raw: bytes, path: Path, number: int) -> List[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not UTF-8 text (byte {exc.start})", number) from None
    rows = list(csv.reader([text]))
    return rows[0] if rows else []


class OpenImagesDataset(FileDataset):
    """`OpenImagesDataset(root, split="validation", images=None, annotations=None)`.

    `annotations`: the boxes CSV (instead of <root>/<split>-annotations-bbox.csv);
    `images`: the images folder (instead of <root>/<split>/)."""

    def __init__(self, root, split: str = "validation", images=None, annotations=None):
        self.root = Path(root)
        self.split = split
        if annotations:
            self.annotation_file = require_file(Path(annotations), "Open Images boxes CSV (--annotations)")
        else:
            names = (f"{split}-annotations-bbox.csv", f"oidv6-{split}-annotations-bbox.csv")
            found = _find(self.root, names)
            self.annotation_file = require_file(found or self.root / names[0], f"Open Images boxes of split '{split}'")
        descriptions = _find(self.root, DESCRIPTIONS) or _find(self.annotation_file.parent, DESCRIPTIONS)
        self.descriptions = read_descriptions(descriptions) if descriptions else {}
        if images is not None:
            self.image_dir = Path(images)
        else:
            candidates = [self.root / split, self.root / "images" / split, self.root / "images"]
            self.image_dir = next((c for c in candidates if c.is_dir()), candidates[0])
        self._index()

    def _index(self) -> None:
        """One pass over the CSV: the columns, each image's row segments, the labels used."""
        path = self.annotation_file
        segments: Dict[str, List[Tuple[int, int, int]]] = {}
        labels: Dict[str, None] = {}
        with open(path, "rb") as stream:
            header = stream.readline()
            columns = _split_csv_line(header, path, 1)
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise FormatError(path, f"the header lacks {', '.join(missing)} (an Open Images "
                                        f"*-annotations-bbox.csv starts with ImageID,Source,LabelName,...)", 1)
            self.columns = {name: i for i, name in enumerate(columns)}
            image_col, label_col = self.columns["ImageID"], self.columns["LabelName"]
            offset, number = len(header), 1
            current = None
            for raw in stream:
                number += 1
                if raw.strip():
                    row = _split_csv_line(raw, path, number)
                    if len(row) < len(columns):
                        raise FormatError(path, f"expected {len(columns)} fields, got {len(row)}", number)
                    image_id = row[image_col]
                    labels.setdefault(row[label_col])
                    if image_id != current:
                        segments.setdefault(image_id, []).append((offset, number, 0))
                        current = image_id
                    start, first, count = segments[image_id][-1]
                    segments[image_id][-1] = (start, first, count + 1)
                offset += len(raw)
        self._segments = segments
        self._entries = list(segments)
        order = {mid: i for i, mid in enumerate(self.descriptions)}
        used = sorted(labels, key=lambda mid: (order.get(mid, len(order)), mid))
        self.classes = tuple(self.descriptions.get(mid, mid) for mid in used)

    def _prefix(self) -> str:
        try:
            return self.image_dir.relative_to(self.root).as_posix() + "/"
        except ValueError:
            return ""

    def entry_name(self, entry) -> str:
        return f"{self._prefix()}{entry}{IMAGE_SUFFIX}"

    def record(self, entry) -> ImageRecord:
        path = self.contained(self.image_dir / (entry + IMAGE_SUFFIX), entry, self.annotation_file,
                              self._segments[entry][0][1], root=self.image_dir, what="ImageID")
        width, height = image_size(path)
        objects = [obj for segment in self._segments[entry] for obj in self._rows(segment, width, height)]
        return ImageRecord(name=self.entry_name(entry), path=path, width=width, height=height,
                           objects=tuple(objects), annotation=self.annotation_file, image_id=entry)

    def _rows(self, segment, width: int, height: int) -> List[BoxObject]:
        offset, first, count = segment
        path, col = self.annotation_file, self.columns
        objects = []
        with open(path, "rb") as stream:
            stream.seek(offset)
            number = first - 1
            while len(objects) < count:
                raw = stream.readline()
                number += 1
                if not raw:
                    raise FormatError(path, "changed while it was read", number)
                if not raw.strip():
                    continue
                row = _split_csv_line(raw, path, number)
                x0, x1, y0, y1 = (parse_number(row[col[k]], path, number, k) for k in ("XMin", "XMax", "YMin", "YMax"))
                flags = {k: row[col[k]] == "1" for k in FLAGS if k in col}
                group = flags.get("IsGroupOf", False)
                mid = row[col["LabelName"]]
                objects.append(BoxObject(label=self.descriptions.get(mid, mid),
                                         box=(x0 * width, y0 * height, x1 * width, y1 * height),
                                         difficult=group, ignore=group,
                                         attributes={"line": number, "label_name": mid, **flags}))
        return objects
