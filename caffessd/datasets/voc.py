"""Pascal VOC: Annotations/*.xml listed by ImageSets/Main/<split>.txt.

As the SSD recipe (data/VOC0712/create_list.sh) does, a VOCdevkit root
combines years: `trainval` is VOC2007 + VOC2012 trainval, `test` is VOC2007
test only; names are `VOC2007/JPEGImages/000001.jpg` like its list files.
A single VOC-style folder (ImageSets/ directly under the root) works too.
Boxes stay as the XML writes them (1-based inclusive pixels); like the SSD
fork's ReadXMLToAnnotatedDatum the writer divides them by the XML's size.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

from caffessd.datasets.base import FileDataset, parse_number, read_text, require_file
from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.datasets.xmltree import XmlNode, parse_xml
from caffessd.errors import FormatError
from caffessd.util.files import read_bytes
from caffessd.datasets.images import image_size

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")

# The SSD recipe's year sets per split (create_list.sh skips VOC2012 for test).
RECIPE_YEARS = {"trainval": ("VOC2007", "VOC2012"), "test": ("VOC2007",)}


def parse_voc_xml(path: Path, data: Optional[bytes] = None) -> Tuple[Optional[int], Optional[int], List[BoxObject]]:
    """(width, height, objects) of one VOC annotation; width/height are None
    when the XML has no <size>."""
    root = parse_xml(read_bytes(path) if data is None else data, path)
    if root.tag != "annotation":
        raise FormatError(path, f"root element is <{root.tag}>, expected <annotation>", root.line)
    width = height = None
    size = root.find("size")
    if size is not None:
        width = _int_child(size, "width", path)
        height = _int_child(size, "height", path)
    objects = [_voc_object(node, path) for node in root.findall("object")]
    return width, height, objects


def _int_child(node: XmlNode, tag: str, path: Path) -> int:
    child = node.find(tag)
    if child is None:
        raise FormatError(path, f"<{node.tag}> has no <{tag}>", node.line)
    value = parse_number(child.text, path, child.line, f"<{tag}>")
    if value != int(value) or value <= 0:
        raise FormatError(path, f"<{tag}> must be a positive integer, got {child.text!r}", child.line)
    return int(value)


def _voc_object(node: XmlNode, path: Path) -> BoxObject:
    name = node.find("name")
    if name is None or not name.text:
        raise FormatError(path, "<object> has no <name>", node.line)
    box_node = node.find("bndbox")
    if box_node is None:
        raise FormatError(path, f"<object> '{name.text}' has no <bndbox>", node.line)
    box = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        child = box_node.find(tag)
        if child is None:
            raise FormatError(path, f"<bndbox> has no <{tag}>", box_node.line)
        box.append(parse_number(child.text, path, child.line, f"<{tag}>"))
    attributes = {"line": node.line}
    for tag in ("pose", "truncated", "occluded"):
        child = node.find(tag)
        if child is not None and child.text:
            attributes[tag] = child.text
    difficult = node.find("difficult")
    return BoxObject(label=name.text, box=tuple(box), difficult=difficult is not None and difficult.text == "1",
                     attributes=attributes)


class VocEntry(NamedTuple):
    prefix: str       # "VOC2007/" in a devkit, "" for a single VOC folder
    folder: Path
    image_id: str
    listing: Path     # the split file naming it, and its line there (for messages)
    line: int


class VocDataset(FileDataset):
    """`VocDataset(root, split="trainval", years=None, images=None, annotations=None)`:
    a VOCdevkit (years combined as the SSD recipe does unless `years` names
    them) or one VOC folder. `images` / `annotations` replace a single VOC
    folder's JPEGImages/ and Annotations/."""

    def __init__(self, root, split: str = "trainval", years: Optional[Sequence[str]] = None,
                 images=None, annotations=None):
        self.root = Path(root)
        self.split = split
        self.image_dir = Path(images) if images is not None else None
        self.annotation_dir = Path(annotations) if annotations is not None else None
        if (self.root / "ImageSets" / "Main").is_dir():
            folders = [("", self.root)]
        else:
            wanted = years or RECIPE_YEARS.get(split) or sorted(
                p.name for p in self.root.glob("VOC*") if (p / "ImageSets" / "Main" / f"{split}.txt").is_file())
            folders = [(name + "/", self.root / name) for name in wanted if (self.root / name).is_dir()]
            if not folders and any(self.root.glob("VOC*/ImageSets/Main")):
                raise FormatError(self.root, f"no VOC year folder has ImageSets/Main/{split}.txt")
            if not folders:
                raise FormatError(self.root, f"not a VOC folder or VOCdevkit: no ImageSets/Main, no {'/'.join(wanted) or 'VOC*'}")
        self._entries = []
        for prefix, folder in folders:
            listing = require_file(folder / "ImageSets" / "Main" / f"{split}.txt", f"VOC split '{split}'")
            for number, line in enumerate(read_text(listing).splitlines(), start=1):
                if line.strip():
                    image_id = line.split()[0]  # per-class lists add a flag column
                    self._entries.append(VocEntry(prefix, folder, image_id, listing, number))
        self._classes = None

    @property
    def classes(self) -> Sequence[str]:
        """The 20 VOC classes, or for a custom VOC-style dataset the names its
        annotations use, sorted (found by reading every annotation once)."""
        if self._classes is None:
            names = set()
            for entry in self._entries:
                names.update(obj.label for obj in parse_voc_xml(self._checked(entry)[0])[2])
            self._classes = VOC_CLASSES if names <= set(VOC_CLASSES) else tuple(sorted(names))
        return self._classes

    def entry_name(self, entry) -> str:
        return f"{entry.prefix}JPEGImages/{entry.image_id}.jpg"

    def files(self, entry) -> Sequence[Path]:
        return ((self.annotation_dir or entry.folder / "Annotations") / f"{entry.image_id}.xml",
                (self.image_dir or entry.folder / "JPEGImages") / f"{entry.image_id}.jpg")

    def _checked(self, entry) -> Tuple[Path, Path]:
        """(annotation, image) of an entry, both inside the devkit, or inside the
        folders --annotations / --images name (or refused)."""
        annotation, image = self.files(entry)
        return (self.contained(annotation, entry.image_id, entry.listing, entry.line, root=self.annotation_dir),
                self.contained(image, entry.image_id, entry.listing, entry.line, root=self.image_dir))

    def record(self, entry) -> ImageRecord:
        annotation, path = self._checked(entry)
        width, height, objects = parse_voc_xml(annotation)
        if width is None:
            width, height = image_size(path)
        return ImageRecord(name=self.entry_name(entry), path=path, width=width, height=height,
                           objects=tuple(objects), annotation=annotation, image_id=entry.image_id)
