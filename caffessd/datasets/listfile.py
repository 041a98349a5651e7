"""Caffe's list files (create_list.sh / create_list.py output): lines of
`IMAGE ANNOTATION`, both relative to a root folder, as convert_annoset reads.

Annotations are VOC XML, the SSD fork's per-image JSON
(`{"image": {"width", "height"}, "annotation": [{"category_id", "iscrowd",
"bbox": [x, y, w, h]}]}`, category ids looked up by name in the labelmap as
ReadJSONToAnnotatedDatum does) or txt lines `label xmin ymin xmax ymax`
(label ids; names come from the labelmap when one is given). The type
follows the annotation's extension unless `label_type` says.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

from caffessd.datasets.base import FileDataset, parse_number, read_text, require_file
from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.datasets.voc import VOC_CLASSES, parse_voc_xml
from caffessd.errors import FormatError
from caffessd.datasets.images import image_size
from caffessd.util.jsonfile import parse_json

LABEL_TYPES = ("xml", "json", "txt")


def parse_caffe_json(path: Path):
    """(width, height, objects) of one of the SSD fork's per-image JSON annotations."""
    data = parse_json(read_text(path), path)
    if not isinstance(data, dict):
        raise FormatError(path, "expected a JSON object with \"image\" and \"annotation\"")
    image = data.get("image") or {}
    annotations = data.get("annotation") or []
    if not isinstance(image, dict) or not isinstance(annotations, list):
        raise FormatError(path, "\"image\" must be an object and \"annotation\" a list")
    width, height = (_size(image.get(key), key, path) for key in ("width", "height"))
    objects = []
    for index, ann in enumerate(annotations):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not isinstance(bbox, list) or len(bbox) != 4 or not isinstance(ann.get("category_id"), (int, str)):
            raise FormatError(path, f"annotation[{index}] needs \"category_id\" and \"bbox\": [x, y, w, h]")
        x, y, w, h = (parse_number(v, path, None, f"annotation[{index}] bbox") for v in bbox)
        crowd = bool(ann.get("iscrowd", 0))
        objects.append(BoxObject(label=str(ann["category_id"]), box=(x, y, x + w, y + h), difficult=crowd,
                                 ignore=crowd, attributes={"category_id": ann["category_id"]}))
    return width, height, objects


def _size(value, key: str, path: Path):
    """A positive whole number of pixels, or None when the file does not say."""
    if value in (None, 0, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or not 0 < value < 2 ** 31 \
            or value != int(value):
        raise FormatError(path, f"\"image\" {key} must be a positive whole number, got {str(value)[:40]!r}")
    return int(value)


def parse_caffe_txt(path: Path, names: Optional[Mapping[int, str]] = None):
    """Objects of a txt annotation; `names` maps label ids to labelmap names."""
    objects = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise FormatError(path, f"expected `label xmin ymin xmax ymax`, got {len(fields)} fields", number)
        label = parse_number(fields[0], path, number, "label")
        if label != int(label):
            raise FormatError(path, f"label must be an integer id, got {fields[0]!r}", number)
        label = int(label)
        if names is not None and label not in names:
            raise FormatError(path, f"label id {label} is not in the labelmap", number)
        box = tuple(parse_number(v, path, number, "box") for v in fields[1:])
        objects.append(BoxObject(label=names[label] if names is not None else str(label), box=box,
                                 attributes={"label_id": label, "line": number}))
    return objects


class ListDataset(FileDataset):
    """`ListDataset(list_file, root=None, label_type=None, labelmap=None)`.

    `root` defaults to the list file's folder; `labelmap` ({label id: name})
    names txt labels."""

    def __init__(self, list_file, root=None, label_type: Optional[str] = None,
                 labelmap: Optional[Mapping[int, str]] = None):
        self.list_file = require_file(Path(list_file), "list file")
        self.root = Path(root) if root is not None else self.list_file.parent
        if label_type is not None and label_type not in LABEL_TYPES:
            raise FormatError(self.list_file, f"unknown label type {label_type!r} (xml, json or txt)")
        self.label_type = label_type
        self.names = dict(labelmap) if labelmap is not None else None
        self._entries = []
        for number, line in enumerate(read_text(self.list_file).splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise FormatError(self.list_file, f"expected `IMAGE ANNOTATION`, got {len(fields)} fields", number)
            self._entries.append((fields[0], fields[1], number))
        self._classes = None

    def _type_of(self, annotation: str) -> str:
        if self.label_type:
            return self.label_type
        suffix = Path(annotation).suffix.lower().lstrip(".")
        if suffix not in LABEL_TYPES:
            raise FormatError(self.list_file, f"cannot tell the annotation type of '{annotation}' (give --label-type)")
        return suffix

    @property
    def classes(self):
        """Label names in the annotations (VOC's order when they are VOC's),
        found by reading every annotation once."""
        if self._classes is None:
            found = set()
            for entry in self._entries:
                found.update(self.record(entry, read_size=False).labels())
            if found <= set(VOC_CLASSES):
                self._classes = VOC_CLASSES
            elif all(name.isdigit() for name in found):
                self._classes = tuple(sorted(found, key=int))
            else:
                self._classes = tuple(sorted(found))
        return self._classes

    def label_ids(self):
        # Numeric names (txt labels, JSON category ids) keep their own ids.
        if self.classes and all(name.isdigit() for name in self.classes):
            return {name: int(name) for name in self.classes}
        return None

    def entry_name(self, entry) -> str:
        return entry[0]

    def files(self, entry):
        return self.root / entry[1], self.root / entry[0]

    def dataset_files(self):
        return (self.list_file,)

    def record(self, entry, read_size: bool = True) -> ImageRecord:
        image, annotation, number = entry
        anno_path = self.contained(self.root / annotation, annotation, self.list_file, number)
        path = self.contained(self.root / image, image, self.list_file, number)
        if not anno_path.is_file():
            raise FormatError(self.list_file, f"annotation '{anno_path}' does not exist", number)
        kind = self._type_of(annotation)
        width = height = None
        if kind == "xml":
            width, height, objects = parse_voc_xml(anno_path)
        elif kind == "json":
            width, height, objects = parse_caffe_json(anno_path)
        else:
            objects = parse_caffe_txt(anno_path, self.names)
        if read_size and (width is None or height is None):
            width, height = image_size(path)
        return ImageRecord(name=image, path=path, width=width or 0, height=height or 0, objects=tuple(objects),
                           annotation=anno_path, image_id=Path(image).stem)
