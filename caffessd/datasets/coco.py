"""COCO instances JSON (annotations/instances_<split>.json, images under
<split>/ or images/<split>/).

Boxes [x, y, w, h] become (x, y, x + w, y + h) as the SSD fork's
ReadJSONToAnnotatedDatum computes them; `iscrowd` objects are flagged both
`ignore` and `difficult` (the fork writes iscrowd into `difficult`). Labels
are the category names; `label_ids()` gives the COCO category ids so that a
written labelmap keeps the 91-id layout (with "N/A" gaps) that the published
91-class nets (chuanqi305 labelmap_coco.prototxt) expect.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, Mapping

from caffessd.datasets.base import FileDataset, parse_number, read_text, require_file
from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.errors import FormatError
from caffessd.util.jsonfile import parse_json


def load_coco_json(path: Path) -> dict:
    data = parse_json(read_text(path), path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise FormatError(path, "not a COCO instances file: no \"images\" list")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise FormatError(path, f"\"{key}\" is not a list")
    return data


class CocoDataset(FileDataset):
    """`CocoDataset(root, split="val2017", annotations=None, images=None)`.

    `annotations` (a JSON path) and `images` (a folder) override the layout."""

    def __init__(self, root, split: str = "val2017", annotations=None, images=None):
        self.root = Path(root)
        self.split = split
        self.annotation_file = Path(annotations) if annotations else self.root / "annotations" / f"instances_{split}.json"
        require_file(self.annotation_file, "COCO instances JSON")
        data = load_coco_json(self.annotation_file)
        # Entries must stay inside the dataset root, or inside the images folder when one is given.
        self.images_root = Path(images) if images is not None else self.root
        if images is not None:
            self.image_dir = Path(images)
        else:
            candidates = [self.root / split, self.root / "images" / split]
            self.image_dir = next((c for c in candidates if c.is_dir()), candidates[0])
        self.categories: Dict[int, str] = {}
        for index, category in enumerate(data.get("categories", [])):
            try:
                self.categories[int(category["id"])] = str(category["name"])
            except (KeyError, TypeError, ValueError, OverflowError):
                raise FormatError(self.annotation_file, f"categories[{index}] needs an integer \"id\" and a \"name\"") from None
        self.classes = tuple(self.categories[i] for i in sorted(self.categories))
        self._by_image = defaultdict(list)
        for index, annotation in enumerate(data.get("annotations", [])):
            if not isinstance(annotation, dict) or not _is_id(annotation.get("image_id")):
                raise FormatError(self.annotation_file, f"annotations[{index}] has no \"image_id\" (a number or text)")
            self._by_image[annotation["image_id"]].append((index, annotation))
        self._entries = data["images"]

    def label_ids(self) -> Mapping[str, int]:
        return {name: cid for cid, name in self.categories.items()}

    def entry_name(self, entry) -> str:
        return f"{self._prefix()}{entry.get('file_name', '?')}" if isinstance(entry, dict) else "?"

    def _prefix(self) -> str:
        try:
            return self.image_dir.relative_to(self.root).as_posix() + "/"
        except ValueError:
            return ""

    def files(self, entry) -> tuple:
        name = entry.get("file_name") if isinstance(entry, dict) else None
        return (self.image_dir / name,) if isinstance(name, str) else ()

    def dataset_files(self) -> tuple:
        return (self.annotation_file,)

    def record(self, entry) -> ImageRecord:
        where = self.annotation_file
        try:
            image_id, file_name = entry["id"], entry["file_name"]
            width, height = int(entry["width"]), int(entry["height"])
            if not _is_id(image_id) or not isinstance(file_name, str) or not file_name:
                raise TypeError
        except (KeyError, TypeError, ValueError, OverflowError):
            raise FormatError(where, f"image entry {str(entry)[:80]} needs id, file_name, width, height") from None
        path = self.contained(self.image_dir / file_name, file_name, where, root=self.images_root,
                              what="file_name")
        objects = tuple(self._coco_object(index, ann) for index, ann in self._by_image.get(image_id, ()))
        return ImageRecord(name=self._prefix() + file_name, path=path, width=width,
                           height=height, objects=objects, annotation=where, image_id=image_id)

    def _coco_object(self, index: int, ann: dict) -> BoxObject:
        where = self.annotation_file
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise FormatError(where, f"annotations[{index}] (id {ann.get('id')}): \"bbox\" must be [x, y, w, h]")
        x, y, w, h = (parse_number(v, where, None, f"annotations[{index}] bbox") for v in bbox)
        category_id = ann.get("category_id")
        if not _is_id(category_id) or category_id not in self.categories:
            raise FormatError(where, f"annotations[{index}] (id {ann.get('id')}): category_id {category_id!r} is not in \"categories\"")
        crowd = bool(ann.get("iscrowd", 0))
        return BoxObject(label=self.categories[category_id], box=(x, y, x + w, y + h), difficult=crowd, ignore=crowd,
                         attributes={"category_id": category_id, "area": ann.get("area"), "id": ann.get("id")})


def _is_id(value) -> bool:
    """COCO ids are numbers (or, in some exports, text); anything else (a list,
    an object, null) is a malformed file, not a key to look up."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def coco91_labelmap_items(categories: Mapping[int, str]) -> list:
    """(name, label, display_name) for a labelmap whose labels ARE the COCO
    category ids: background 0, then every id up to the largest, the unused
    ones as "N/A" (the layout of chuanqi305's labelmap_coco.prototxt)."""
    items = [("none_of_the_above", 0, "background")]
    for label in range(1, max(categories, default=0) + 1):
        name = categories.get(label, "N/A")
        items.append((name, label, name))
    return items
