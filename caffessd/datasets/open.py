"""One entry point over the readers: `open_dataset(path, format, split)`."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

from caffessd.errors import CaffessdError, FormatError
from caffessd.datasets.voc import VocDataset
from caffessd.datasets.coco import CocoDataset
from caffessd.datasets.wider import WiderFaceDataset
from caffessd.datasets.kitti import KittiDataset
from caffessd.datasets.listfile import ListDataset
from caffessd.datasets.lmdb_reader import LmdbDataset
from caffessd.datasets.yolo import YoloDataset
from caffessd.datasets.openimages import OpenImagesDataset
from caffessd.datasets.cvat import CvatDataset
from caffessd.datasets.labelme import LabelMeDataset

FORMATS = ("voc", "coco", "wider", "kitti", "list", "lmdb", "yolo", "openimages", "cvat", "labelme")
DEFAULT_SPLITS = {"voc": "trainval", "coco": "val2017", "wider": "val", "kitti": "training", "yolo": "train",
                  "openimages": "validation"}
# Formats whose layout `images` / `annotations` can replace (the others take neither).
LAYOUT_OPTIONS = ("voc", "coco", "wider", "kitti", "yolo", "openimages", "cvat", "labelme")


def open_dataset(path, format: str, split: Optional[str] = None, root=None, label_type: Optional[str] = None,
                 labelmap: Optional[Mapping[int, str]] = None, images=None, annotations=None,
                 allow_outside: bool = False):
    """A reader for `path` in `format` (see FORMATS).

    voc: a VOCdevkit or VOC folder; coco: the COCO root (or, with `root`
    the images folder, an instances JSON); wider: the WIDER FACE root;
    kitti: the KITTI root; list: a Caffe list file (`root` is the folder its
    paths are relative to, default the list's folder; `labelmap` names txt
    label ids); lmdb: a database written by make-lmdb; yolo: a folder with
    data.yaml or classes.txt (or the data.yaml); openimages: the folder of the
    boxes CSV; cvat: the folder of annotations.xml (or the XML); labelme: a
    folder of labelme JSON files.

    `images` (a folder) and `annotations` (a file or folder, by format)
    replace the layout a format assumes: COCO's instances JSON and image
    folder, VOC's Annotations/ and JPEGImages/, YOLO's labels/ and images/,
    Open Images' boxes CSV and image folder, CVAT's XML and images/, KITTI's
    label_2/ and image_2/, WIDER's bbx_gt file and image folder, LabelMe's
    JSON folder and image folder.

    Every image or annotation an entry names must lie inside the dataset's
    folder unless `allow_outside` (caffessd.util.dataset_paths)."""
    reader = _open(Path(path), format, split, root, label_type, labelmap, images, annotations)
    reader.allow_outside = allow_outside
    return reader


def _open(path: Path, format: str, split, root, label_type, labelmap, images, annotations):
    if not path.exists():
        raise FormatError(path, "no such file or folder")
    if format not in FORMATS:
        raise CaffessdError(f"unknown dataset format {format!r} (one of {', '.join(FORMATS)})")
    if (images is not None or annotations is not None) and format not in LAYOUT_OPTIONS:
        raise CaffessdError(f"--images/--annotations do not apply to --format {format} "
                            f"(list: use --root; lmdb: the database is the dataset)")
    split = split or DEFAULT_SPLITS.get(format)
    layout = {"images": images, "annotations": annotations}
    if format == "voc":
        return VocDataset(path, split, **layout)
    if format == "coco":
        if path.is_file():
            return CocoDataset(root or path.parent, split, annotations=path, images=images or root)
        return CocoDataset(path, split, annotations=annotations, images=images or root)
    if format == "wider":
        return WiderFaceDataset(path, split, **layout)
    if format == "kitti":
        return KittiDataset(path, split, **layout)
    if format == "list":
        return ListDataset(path, root=root, label_type=label_type, labelmap=labelmap)
    if format == "lmdb":
        return LmdbDataset(path, labelmap=labelmap)
    if format == "yolo":
        return YoloDataset(path, split, **layout)
    if format == "openimages":
        return OpenImagesDataset(path, split, **layout)
    if format == "cvat":
        return CvatDataset(path, split, **layout)
    return LabelMeDataset(path, split, **layout)
