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

FORMATS = ("voc", "coco", "wider", "kitti", "list", "lmdb")
DEFAULT_SPLITS = {"voc": "trainval", "coco": "val2017", "wider": "val", "kitti": "training"}


def open_dataset(path, format: str, split: Optional[str] = None, root=None, label_type: Optional[str] = None,
                 labelmap: Optional[Mapping[int, str]] = None):
    """A reader for `path` in `format` (see FORMATS).

    voc: a VOCdevkit or VOC folder; coco: the COCO root (or, with `root`
    the images folder, an instances JSON); wider: the WIDER FACE root;
    kitti: the KITTI root; list: a Caffe list file (`root` is the folder its
    paths are relative to, default the list's folder; `labelmap` names txt
    label ids); lmdb: a database written by make-lmdb."""
    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such file or folder")
    split = split or DEFAULT_SPLITS.get(format)
    if format == "voc":
        return VocDataset(path, split)
    if format == "coco":
        if path.is_file():
            return CocoDataset(root or path.parent, split, annotations=path, images=root)
        return CocoDataset(path, split)
    if format == "wider":
        return WiderFaceDataset(path, split)
    if format == "kitti":
        return KittiDataset(path, split)
    if format == "list":
        return ListDataset(path, root=root, label_type=label_type, labelmap=labelmap)
    if format == "lmdb":
        return LmdbDataset(path, labelmap=labelmap)
    raise CaffessdError(f"unknown dataset format {format!r} (one of {', '.join(FORMATS)})")
