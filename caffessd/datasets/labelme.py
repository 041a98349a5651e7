"""LabelMe JSON: one `<image>.json` per image (labelme's own format):

    {"shapes": [{"label": "car", "points": [[x1, y1], [x2, y2]], "shape_type": "rectangle",
                 "flags": {"difficult": false}}, ...],
     "imagePath": "a.jpg", "imageWidth": 640, "imageHeight": 480, "imageData": null}

Rectangles (two opposite corners, in any order), polygons (their bounding
box) and circles (centre and a point on the rim) are objects; points, lines
and masks are not boxes and are left out. `imagePath` is relative to the
JSON's folder and must stay inside the dataset folder. A shape flag
`difficult` marks a difficult object. Classes come from a labels.txt (as
labelme2voc reads it, `__ignore__` and `_background_` skipped) or are the
labels used, sorted.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import List, Optional, Tuple

from caffessd.datasets.base import FileDataset, load_json, parse_number, read_text, require_dir
from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.datasets.images import image_size
from caffessd.errors import FormatError

BOX_SHAPES = ("rectangle", "polygon", "circle")
SKIPPED_LABELS = ("__ignore__", "_background_")


def _points(shape: dict, path: Path, index: int) -> List[Tuple[float, float]]:
    points = shape.get("points")
    if not isinstance(points, list) or not points or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise FormatError(path, f"shapes[{index}]: \"points\" must be a list of [x, y]")
    return [(parse_number(x, path, None, f"shapes[{index}] x"), parse_number(y, path, None, f"shapes[{index}] y"))
            for x, y in points]


def shape_box(shape: dict, path: Path, index: int) -> Optional[Tuple[float, float, float, float]]:
    """The shape's box in pixels, or None for a shape that is not a box."""
    kind = shape.get("shape_type") or "polygon"   # labelme < 3 wrote polygons without a type
    if kind not in BOX_SHAPES:
        return None
    points = _points(shape, path, index)
    if kind == "circle":
        if len(points) != 2:
            raise FormatError(path, f"shapes[{index}]: a circle needs its centre and one rim point")
        (cx, cy), (px, py) = points
        r = math.hypot(px - cx, py - cy)
        return cx - r, cy - r, cx + r, cy + r
    if kind == "rectangle" and len(points) != 2:
        raise FormatError(path, f"shapes[{index}]: a rectangle needs two corner points, got {len(points)}")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def parse_labelme(path: Path) -> dict:
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise FormatError(path, "not a LabelMe file: no \"shapes\" list")
    return data


class LabelMeDataset(FileDataset):
    """`LabelMeDataset(root, split=None, images=None, annotations=None)`: the
    JSON files under root/<split>/ (or root, or `annotations`); `images`: the
    folder the images are in (then found by the file name of imagePath)."""

    def __init__(self, root, split: Optional[str] = None, images=None, annotations=None):
        self.root = Path(root)
        self.split = split
        if annotations is not None:
            folder = require_dir(Path(annotations), "LabelMe JSON folder (--annotations)")
        elif split and (self.root / split).is_dir():
            folder = self.root / split
        else:
            folder = require_dir(self.root, "LabelMe folder")
        self.json_dir = folder
        self.image_dir = Path(images) if images is not None else None
        self._entries = sorted(folder.rglob("*.json"), key=lambda p: p.relative_to(folder).as_posix())
        self._classes = None

    @property
    def classes(self):
        if self._classes is None:
            listed = self.root / "labels.txt"
            if listed.is_file():
                names = [line.strip() for line in read_text(listed).splitlines() if line.strip()]
                self._classes = tuple(n for n in names if n not in SKIPPED_LABELS)
            else:
                found = set()
                for entry in self._entries:
                    found.update(self._objects(parse_labelme(entry), entry)[0].keys())
                self._classes = tuple(sorted(found))
        return self._classes

    def _image_path(self, data: dict, entry: Path) -> Path:
        image = data.get("imagePath")
        if not isinstance(image, str) or not image:
            raise FormatError(entry, "has no \"imagePath\"")
        text = image.replace("\\", "/")    # labelme on Windows writes backslashes
        if self.image_dir is not None:
            return self.contained(self.image_dir / Path(text).name, image, entry, root=self.image_dir,
                                  what="imagePath")
        return self.contained(entry.parent / text, image, entry, what="imagePath")

    def _objects(self, data: dict, entry: Path):
        labels, objects = {}, []
        for index, shape in enumerate(data["shapes"]):
            if not isinstance(shape, dict) or not isinstance(shape.get("label"), str) or not shape["label"]:
                raise FormatError(entry, f"shapes[{index}] has no \"label\"")
            box = shape_box(shape, entry, index)
            if box is None or shape["label"] in SKIPPED_LABELS:
                continue
            flags = shape.get("flags") if isinstance(shape.get("flags"), dict) else {}
            labels[shape["label"]] = None
            objects.append(BoxObject(label=shape["label"], box=box, difficult=bool(flags.get("difficult", False)),
                                     attributes={"shape": index, "shape_type": shape.get("shape_type") or "polygon",
                                                 "group_id": shape.get("group_id")}))
        return labels, objects

    def _name(self, path: Path) -> str:
        try:
            return Path(os.path.normpath(path)).relative_to(os.path.normpath(self.root)).as_posix()
        except ValueError:
            return path.name

    def entry_name(self, entry: Path) -> str:
        return self._name(entry)

    def record(self, entry: Path) -> ImageRecord:
        data = parse_labelme(entry)
        path = self._image_path(data, entry)
        _, objects = self._objects(data, entry)
        width, height = data.get("imageWidth"), data.get("imageHeight")
        if width is None or height is None:
            width, height = image_size(path)
        for key, value in (("imageWidth", width), ("imageHeight", height)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value != int(value) or value <= 0:
                raise FormatError(entry, f"\"{key}\" must be a positive integer, got {value!r}")
        return ImageRecord(name=self._name(path), path=path, width=int(width), height=int(height),
                           objects=tuple(objects), annotation=entry, image_id=entry.stem)
