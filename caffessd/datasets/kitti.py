"""KITTI object detection: training/label_2/<id>.txt beside training/image_2/<id>.png.

Each line: `type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry`.
`DontCare` regions are flagged `ignore`; truncation/occlusion/alpha stay as
attributes. A split file ImageSets/<split>.txt (ids, one a line) selects
images; without one, every label file of training/ is used.
"""
from __future__ import annotations

from pathlib import Path

from caffessd.datasets.base import FileDataset, parse_number, read_text, require_dir
from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.errors import FormatError
from caffessd.datasets.images import image_size

KITTI_CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def parse_kitti_labels(path: Path) -> list:
    objects = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 15:
            raise FormatError(path, f"expected 15 fields (type, truncated, occluded, alpha, box, 3-D), got {len(fields)}", number)
        label = fields[0]
        truncated, occluded, alpha, *box = (parse_number(v, path, number, "value") for v in fields[1:8])
        objects.append(BoxObject(label=label, box=tuple(box), ignore=label == "DontCare",
                                 attributes={"truncated": truncated, "occluded": int(occluded), "alpha": alpha,
                                             "line": number}))
    return objects


class KittiDataset(FileDataset):
    """`KittiDataset(root, split="training", images=None, annotations=None)`;
    `images` / `annotations` replace <split folder>/image_2 and label_2."""

    classes = KITTI_CLASSES

    def __init__(self, root, split: str = "training", images=None, annotations=None):
        self.root = Path(root)
        self.split = split
        folder = "testing" if split == "testing" else "training"
        self.label_dir = require_dir(Path(annotations) if annotations else self.root / folder / "label_2",
                                     "KITTI labels")
        self.image_dir = Path(images) if images else self.root / folder / "image_2"
        # Folders the user named: entries must stay inside them rather than the root.
        self._roots = (Path(annotations) if annotations else None, Path(images) if images else None)
        split_file = self.root / "ImageSets" / f"{split}.txt"
        self._lines = {}   # id -> (split file, line), for messages about an entry
        if split_file.is_file():
            self._entries = []
            for number, line in enumerate(read_text(split_file).splitlines(), start=1):
                if line.strip():
                    self._entries.append(line.split()[0])
                    self._lines[self._entries[-1]] = (split_file, number)
        elif split in ("training", "testing"):
            self._entries = sorted(p.stem for p in self.label_dir.glob("*.txt"))
        else:
            raise FormatError(split_file, f"no such file (KITTI split '{split}'; use 'training' for all)")

    def _image_path(self, image_id: str) -> Path:
        for suffix in IMAGE_SUFFIXES:
            candidate = self.image_dir / f"{image_id}{suffix}"
            if candidate.exists():
                return candidate
        return self.image_dir / f"{image_id}.png"

    def entry_name(self, entry) -> str:
        return _relative(self._image_path(entry), self.root)

    def files(self, entry):
        return self.label_dir / f"{entry}.txt", self._image_path(entry)

    def record(self, entry) -> ImageRecord:
        source, line = self._lines.get(entry, (self.label_dir, None))
        annotation, path = (self.contained(p, entry, source, line, root=root)
                            for p, root in zip(self.files(entry), self._roots))
        objects = parse_kitti_labels(annotation)
        width, height = image_size(path)
        return ImageRecord(name=_relative(path, self.root), path=path, width=width, height=height,
                           objects=tuple(objects), annotation=annotation, image_id=entry)


def _relative(path: Path, root: Path) -> str:
    """The list-file name of an image (relative to the root; as given when outside it)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
