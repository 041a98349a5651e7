"""YOLO txt labels: one `<image>.txt` per image, lines `class cx cy w h`
normalised to the image (Ultralytics and darknet write them so); a line of
`class x1 y1 x2 y2 ...` (a YOLO segmentation polygon) counts as the polygon's
bounding box. An image without a label file has no objects.

Class names come from a `data.yaml` (Ultralytics: `path`, `train`/`val`/`test`
each a folder of images, a txt list of images, or a list of those; `names` a
list or an {id: name} map) or from `classes.txt` (darknet / LabelImg, one
name a line). Labels sit where Ultralytics looks for them: the image path
with its last `/images/` replaced by `/labels/`, or beside the image; or in
the folder `annotations` names.

Boxes become pixels of the image as stored (its size read from the header):
xmin = (cx - w/2) * width, and so on, without rounding.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

from caffessd.datasets.base import FileDataset, IMAGE_SUFFIXES, list_images, parse_number, read_text, require_dir
from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.datasets.images import image_size
from caffessd.errors import CaffessdError, FormatError

YAML_NAMES = ("data.yaml", "dataset.yaml")
MAX_CONFIG_BYTES = 1 << 20   # a data.yaml is a few lines; refuse anything that is not


def read_classes_txt(path: Path) -> Tuple[str, ...]:
    names = tuple(line.strip() for line in read_text(path).splitlines() if line.strip())
    if not names:
        raise FormatError(path, "lists no class names")
    return names


def read_data_yaml(path: Path) -> dict:
    """The data.yaml as a dict, through PyYAML's safe loader (plain data only)."""
    try:
        import yaml
    except ImportError:
        raise CaffessdError(f"{path}: reading a data.yaml needs PyYAML: pip install 'caffessd[datasets]'") from None
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise FormatError(path, f"is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a dataset description")
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise FormatError(path, f"malformed YAML: {getattr(exc, 'problem', None) or exc}",
                          mark.line + 1 if mark is not None else None) from None
    if not isinstance(data, dict):
        raise FormatError(path, "expected a mapping with `names` and the split folders (train, val, ...)")
    return data


def yaml_names(data: dict, path: Path) -> Tuple[str, ...]:
    """`names` as a list, or an {id: name} map with ids 0..N-1."""
    names = data.get("names")
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise FormatError(path, "`names` keys must be class ids 0, 1, ...") from None
        if ids != list(range(len(ids))):
            raise FormatError(path, f"`names` ids must run 0..{len(ids) - 1} without gaps")
        names = [names.get(i, names.get(str(i))) for i in ids]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int, float)) for n in names):
        raise FormatError(path, "`names` must be a non-empty list of class names (or an {id: name} map)")
    names = tuple(str(n) for n in names)
    count = data.get("nc")
    if count is not None and count != len(names):
        raise FormatError(path, f"`nc` is {count} but `names` has {len(names)} entries")
    return names


def label_path_for(image: Path) -> Path:
    """Ultralytics' rule: the last `/images/` of the path becomes `/labels/`, the suffix `.txt`."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_yolo_labels(path: Path, width: int, height: int, names: Sequence[str]) -> List[BoxObject]:
    """Objects of one label file in pixels of a `width` x `height` image."""
    objects = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise FormatError(path, f"expected `class cx cy w h` (or `class x1 y1 x2 y2 ...`), "
                                    f"got {len(fields)} fields", number)
        class_id = parse_number(fields[0], path, number, "class")
        if class_id != int(class_id) or not 0 <= class_id < len(names):
            raise FormatError(path, f"class {fields[0]!r} is not an id from 0 to {len(names) - 1}", number)
        values = [parse_number(v, path, number, "coordinate") for v in fields[1:]]
        if len(values) == 4:
            cx, cy, w, h = values
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        else:
            xs, ys = values[0::2], values[1::2]
            box = (min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height)
        objects.append(BoxObject(label=names[int(class_id)], box=box,
                                 attributes={"line": number, "class_id": int(class_id)}))
    return objects


class YoloDataset(FileDataset):
    """`YoloDataset(root, split="train", images=None, annotations=None)`.

    `root`: the dataset folder (with data.yaml or classes.txt) or a data.yaml
    file. `images`: the folder of the split's images (instead of the YAML's
    entry or images/<split>/); `annotations`: the folder of its label files
    (mirroring the images' subfolders)."""

    def __init__(self, root, split: str = "train", images=None, annotations=None):
        root = Path(root)
        self.split = split
        self.config = None
        if root.is_file():
            self.config, root = root, root.parent
        else:
            self.config = next((root / n for n in YAML_NAMES if (root / n).is_file()), None)
        self.root = root
        self.label_dir = Path(annotations) if annotations else None
        if self.label_dir is not None:
            require_dir(self.label_dir, "YOLO labels (--annotations)")
        self.image_dir = Path(images) if images is not None else None
        if self.image_dir is not None:
            require_dir(self.image_dir, "YOLO images (--images)")
        self._splits: List[str] = []
        if self.config is not None:
            data = read_data_yaml(self.config)
            self.classes = yaml_names(data, self.config)
            self._read_layout(data)
        else:
            self.classes = self._classes_txt()
        self._entries = None   # listed on first use, when allow_outside is known

    def entries(self) -> List[Path]:
        if self._entries is None:
            if self.image_dir is not None:
                self._entries = list_images(self.image_dir)
            elif self.config is not None:
                self._entries = [image for item in self._splits for image in self._split_images(item)]
            else:
                self._entries = self._folder_images()
        return self._entries

    # ------------------------------------------------------------ layout

    def _classes_txt(self) -> Tuple[str, ...]:
        candidates = [self.root / "classes.txt", self.root / "labels" / "classes.txt"]
        if self.label_dir is not None:
            candidates.insert(0, self.label_dir / "classes.txt")
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FormatError(self.root, "not a YOLO dataset: no data.yaml and no classes.txt")
        return read_classes_txt(found)

    def _folder_images(self) -> List[Path]:
        candidates = [self.root / "images" / self.split, self.root / "images", self.root]
        self.image_dir = next(c for c in candidates if c.is_dir())
        return list_images(self.image_dir)

    def _read_layout(self, data: dict) -> None:
        """`path` (the dataset folder) and the split's entries, checked for their types."""
        base = data.get("path")
        if base is not None and not isinstance(base, str):
            raise FormatError(self.config, "`path` must be a folder name")
        # `path` is the user's own statement of where the dataset is (it may lie elsewhere).
        if base:
            base_path = Path(base)
            self.root = base_path if base_path.is_absolute() else (self.config.parent / base_path)
        if self.image_dir is not None:
            return
        entry = data.get(self.split)
        if entry is None:
            splits = [k for k in ("train", "val", "test") if data.get(k)]
            raise FormatError(self.config, f"has no split '{self.split}' (it lists: {', '.join(splits) or 'none'})")
        self._splits = entry if isinstance(entry, list) else [entry]
        if not all(isinstance(item, str) and item for item in self._splits):
            raise FormatError(self.config, f"`{self.split}` must name folders or txt lists of images")

    def _split_images(self, item: str) -> List[Path]:
        target = self.root / item
        if not target.exists() and item.startswith("../"):
            target = self.root / item[3:]   # Roboflow's `../train/images` beside data.yaml (as Ultralytics reads it)
        target = self.contained(target, item, self.config, what=f"`{self.split}` entry")
        if target.is_dir():
            self.image_dir = target
            return list_images(target)
        if target.is_file() and target.suffix == ".txt":
            self.image_dir = target.parent
            return self._listed_images(target)
        raise FormatError(self.config, f"`{self.split}` entry {item!r}: no such folder or txt list ({target})")

    def _listed_images(self, listing: Path) -> List[Path]:
        paths = []
        for number, line in enumerate(read_text(listing).splitlines(), start=1):
            text = line.strip()
            if text:
                relative = text[2:] if text.startswith("./") else text
                paths.append(self.contained(self.root / relative, text, listing, number, what="image"))
        return paths

    def label_file(self, image: Path) -> Path:
        if self.label_dir is not None:
            try:
                relative = image.relative_to(self.image_dir)
            except ValueError:
                relative = Path(image.name)
            return (self.label_dir / relative).with_suffix(".txt")
        ultralytics = label_path_for(image)
        return ultralytics if ultralytics.exists() or ultralytics.parent.is_dir() else image.with_suffix(".txt")

    # ------------------------------------------------------------ records

    def _name(self, image: Path) -> str:
        try:
            return image.relative_to(self.root).as_posix()
        except ValueError:
            return image.name

    def entry_name(self, entry) -> str:
        return self._name(entry)

    def record(self, entry) -> ImageRecord:
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            raise FormatError(entry, "not an image file name (YOLO lists images, not labels)")
        labels = self.label_file(entry)
        width, height = image_size(entry)
        objects = parse_yolo_labels(labels, width, height, self.classes) if labels.is_file() else []
        return ImageRecord(name=self._name(entry), path=entry, width=width, height=height, objects=tuple(objects),
                           annotation=labels if labels.is_file() else entry, image_id=entry.stem)

