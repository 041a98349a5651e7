"""WIDER FACE: wider_face_split/wider_face_<split>_bbx_gt.txt with images
under WIDER_<split>/images/.

Each block is `file`, `count`, then `count` lines of
`x y w h blur expression illumination invalid occlusion pose` (a face-less
image still has one all-zero line). Boxes become (x, y, x + w, y + h).
Faces marked invalid, or of zero width/height, are kept but flagged
`ignore`; the attributes stay on every face for filtering.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from caffessd.datasets.base import FileDataset, parse_number, read_text, require_file
from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.errors import FormatError
from caffessd.datasets.images import image_size

WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


def split_wider_blocks(path: Path) -> List[Tuple[str, int, List[Tuple[int, str]]]]:
    """[(file, line of the file name, [(line number, face line), ...])]: the
    block structure only; the numbers are parsed per image."""
    lines = read_text(path).splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        name = lines[index].strip()
        if not name:
            index += 1
            continue
        if index + 1 >= len(lines):
            raise FormatError(path, f"image '{name}' has no face count line", index + 1)
        count_text = lines[index + 1].strip()
        if not count_text.isdigit():
            raise FormatError(path, f"expected the face count of '{name}', got {count_text!r}", index + 2)
        count = int(count_text)
        rows = max(count, 1)  # an image with no face still has one placeholder line
        body = [(index + 3 + k, lines[index + 2 + k]) for k in range(rows) if index + 2 + k < len(lines)]
        if len(body) < rows:
            raise FormatError(path, f"'{name}' announces {count} faces but the file ends", len(lines))
        blocks.append((name, index + 1, body if count else []))
        index += 2 + rows
    return blocks


class WiderFaceDataset(FileDataset):
    """`WiderFaceDataset(root, split="val")`: root holds wider_face_split/ and WIDER_<split>/."""

    classes = ("face",)

    def __init__(self, root, split: str = "val", annotations=None, images=None):
        self.root = Path(root)
        self.split = split
        self.annotation_file = Path(annotations) if annotations else (
            self.root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt")
        require_file(self.annotation_file, "WIDER FACE bbx_gt file")
        self.image_prefix = f"WIDER_{split}/images/"
        self.image_dir = Path(images) if images else self.root / self.image_prefix
        self._entries = split_wider_blocks(self.annotation_file)

    def entry_name(self, entry) -> str:
        return self.image_prefix + entry[0]

    def files(self, entry):
        return (self.root / self.image_prefix / entry[0],)

    def dataset_files(self):
        return (self.annotation_file,)

    def record(self, entry) -> ImageRecord:
        name, line, body = entry
        path = self.contained(self.image_dir / name, name, self.annotation_file, line,
                              root=None if self.image_dir == self.root / self.image_prefix else self.image_dir)
        objects = tuple(self._face(number, text) for number, text in body)
        width, height = image_size(path)
        return ImageRecord(name=self.image_prefix + name, path=path, width=width, height=height, objects=objects,
                           annotation=self.annotation_file, image_id=Path(name).stem)

    def _face(self, number: int, text: str) -> BoxObject:
        fields = text.split()
        if len(fields) < 4 + len(WIDER_ATTRIBUTES):
            raise FormatError(self.annotation_file, f"expected 10 numbers on a face line, got {len(fields)}", number)
        x, y, w, h = (parse_number(v, self.annotation_file, number, "box") for v in fields[:4])
        attributes = {key: int(parse_number(v, self.annotation_file, number, key))
                      for key, v in zip(WIDER_ATTRIBUTES, fields[4:])}
        attributes["line"] = number
        ignore = bool(attributes["invalid"]) or w <= 0 or h <= 0
        return BoxObject(label="face", box=(x, y, x + w, y + h), ignore=ignore, attributes=attributes)
