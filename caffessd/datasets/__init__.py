"""Datasets: readers for VOC, COCO, WIDER FACE, KITTI, Caffe's list files,
YOLO txt, Open Images CSV, CVAT for images XML, LabelMe JSON and the LMDBs
make-lmdb writes, all yielding `ImageRecord`s
(caffessd.datasets.records), and the LMDB writer itself.

    from caffessd.datasets import open_dataset, make_lmdb, LmdbDataset
    for record in open_dataset("VOCdevkit", "voc", "test"): ...

Readers and the writer import lazily: `caffessd.datasets` itself stays light.

May import: util, the core and image/.
"""
from caffessd.datasets.open import FORMATS, open_dataset
from caffessd.datasets.records import Box, BoxObject, Dataset, ImageRecord

_LAZY = {
    "VocDataset": "caffessd.datasets.voc", "CocoDataset": "caffessd.datasets.coco",
    "WiderFaceDataset": "caffessd.datasets.wider", "KittiDataset": "caffessd.datasets.kitti",
    "ListDataset": "caffessd.datasets.listfile", "LmdbDataset": "caffessd.datasets.lmdb_reader",
    "YoloDataset": "caffessd.datasets.yolo", "OpenImagesDataset": "caffessd.datasets.openimages",
    "CvatDataset": "caffessd.datasets.cvat", "LabelMeDataset": "caffessd.datasets.labelme",
    "make_lmdb": "caffessd.datasets.lmdb_writer", "ConvertOptions": "caffessd.datasets.lmdb_writer",
    "resolve_labelmap": "caffessd.datasets.labelmap", "lmdb_statistics": "caffessd.datasets.lmdb_stats",
}

__all__ = ["Box", "BoxObject", "Dataset", "ImageRecord", "FORMATS", "open_dataset", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'caffessd.datasets' has no attribute {name!r}")
