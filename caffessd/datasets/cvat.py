"""CVAT for images 1.1 XML: `annotations.xml` beside an `images/` folder (what
CVAT's "CVAT for images" export writes).

    <annotations><meta><task><labels><label><name>car</name>...
      <image id="0" name="a.jpg" width="640" height="480" [subset="Train"]>
        <box label="car" xtl="10.5" ytl="20" xbr="100" ybr="80" occluded="0" [rotation="15"]>
          <attribute name="difficult">true</attribute></box>

`<box>` elements are the objects (a rotated box counts as its axis-aligned
bounding box); polygons, polylines, points, masks and tags are not boxes and
are left out. Corners stay as CVAT writes them (pixels, floats). Classes are
the labels of the task or project `<meta>`, in order, then any other label a
box uses. With a split, only images whose `subset` matches it are read.
Parsed with caffessd.datasets.xmltree, the same guarded parser as VOC.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Tuple

from caffessd.datasets.base import FileDataset, parse_number, require_file
from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.datasets.xmltree import XmlNode, parse_xml
from caffessd.errors import FormatError
from caffessd.util.files import read_bytes

TRUE = ("1", "true", "yes")


def meta_labels(root: XmlNode) -> List[str]:
    """Label names of <meta>/<task|project|job>/<labels>, in order."""
    meta = root.find("meta")
    names: List[str] = []
    for owner in (meta.children if meta is not None else []):
        labels = owner.find("labels")
        for label in (labels.findall("label") if labels is not None else []):
            name = label.find("name")
            if name is not None and name.text and name.text not in names:
                names.append(name.text)
    return names


def _attribute(box: XmlNode, key: str, path: Path) -> float:
    if key not in box.attributes:
        raise FormatError(path, f"<box> has no {key}", box.line)
    return parse_number(box.attributes[key], path, box.line, key)


def box_corners(box: XmlNode, path: Path) -> Tuple[float, float, float, float]:
    """(xtl, ytl, xbr, ybr), or the bounding box of the rectangle turned by `rotation` degrees about its centre."""
    x0, y0, x1, y1 = (_attribute(box, k, path) for k in ("xtl", "ytl", "xbr", "ybr"))
    angle = parse_number(box.attributes.get("rotation", "0"), path, box.line, "rotation")
    if angle % 360 == 0:
        return x0, y0, x1, y1
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    half_w, half_h = hw * c + hh * s, hw * s + hh * c
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def parse_cvat_box(box: XmlNode, path: Path) -> BoxObject:
    label = box.attributes.get("label")
    if not label:
        raise FormatError(path, "<box> has no label", box.line)
    attributes = {"line": box.line, "occluded": box.attributes.get("occluded") == "1"}
    for child in box.findall("attribute"):
        if child.attributes.get("name"):
            attributes[child.attributes["name"]] = child.text
    difficult = str(attributes.get("difficult", "")).lower() in TRUE
    return BoxObject(label=label, box=box_corners(box, path), difficult=difficult, attributes=attributes)


class CvatDataset(FileDataset):
    """`CvatDataset(root, split=None, images=None, annotations=None)`: root holds
    annotations.xml (or `annotations` names the XML) and images/ (or `images`)."""

    def __init__(self, root, split: Optional[str] = None, images=None, annotations=None):
        self.root = Path(root)
        self.split = split
        if self.root.is_file() and annotations is None:
            annotations, self.root = self.root, self.root.parent
        self.annotation_file = require_file(Path(annotations) if annotations else self.root / "annotations.xml",
                                            "CVAT for images XML")
        tree = parse_xml(read_bytes(self.annotation_file), self.annotation_file)
        if tree.tag != "annotations":
            raise FormatError(self.annotation_file, f"root element is <{tree.tag}>, expected <annotations> "
                                                    "(CVAT for images 1.1)", tree.line)
        images_found = tree.findall("image")
        if not images_found and tree.findall("track"):
            raise FormatError(self.annotation_file, "holds tracks (CVAT for video): export as CVAT for images")
        if split is not None and any("subset" in node.attributes for node in images_found):
            images_found = [n for n in images_found if n.attributes.get("subset", "").lower() == split.lower()]
        self._entries = images_found
        names = meta_labels(tree)
        for node in images_found:
            for box in node.findall("box"):
                label = box.attributes.get("label")
                if label and label not in names:
                    names.append(label)
        self.classes = tuple(names)
        self.image_dir = Path(images) if images is not None else self.root / "images"

    def entry_name(self, entry) -> str:
        return self._name(entry.attributes.get("name", "?"))

    def _name(self, name: str) -> str:
        try:
            return (self.image_dir.relative_to(self.root) / name).as_posix()
        except ValueError:
            return name

    def _path(self, entry: XmlNode, name: str) -> Path:
        """The image file: images/<name>, or images/<subset>/<name>; inside the image folder."""
        path = self.image_dir / name
        subset = entry.attributes.get("subset")
        if not path.exists() and subset and (self.image_dir / subset / name).exists():
            path = self.image_dir / subset / name
        return self.contained(path, name, self.annotation_file, entry.line, root=self.image_dir, what="image name")

    def record(self, entry: XmlNode) -> ImageRecord:
        where = self.annotation_file
        name = entry.attributes.get("name")
        if not name:
            raise FormatError(where, "<image> has no name", entry.line)
        size = []
        for key in ("width", "height"):
            value = parse_number(entry.attributes.get(key), where, entry.line, f"<image> {key}")
            if value != int(value) or value <= 0:
                raise FormatError(where, f"<image> {key} must be a positive integer, got {entry.attributes.get(key)!r}",
                                  entry.line)
            size.append(int(value))
        objects = tuple(parse_cvat_box(box, where) for box in entry.findall("box"))
        return ImageRecord(name=self._name(name), path=self._path(entry, name), width=size[0], height=size[1],
                           objects=objects, annotation=where, image_id=entry.attributes.get("id"))
