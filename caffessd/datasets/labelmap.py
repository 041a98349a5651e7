"""Labelmaps for make-lmdb: read one, or write one from a dataset's classes
(background 0 first, named as the SSD fork's labelmaps name it)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict

from caffessd import caffe_pb2
from caffessd.errors import FormatError
from caffessd.datasets.coco import coco91_labelmap_items
from caffessd.protoio import prototxt_text, read_labelmap

BACKGROUND = ("none_of_the_above", 0, "background")


def labelmap_from_dataset(dataset) -> caffe_pb2.LabelMap:
    """Background 0, then the dataset's classes: with the ids its format fixes
    (COCO: category ids, gaps as "N/A", the 91-class layout; numeric txt/JSON
    labels: themselves), otherwise numbered 1..N in the dataset's order."""
    ids = dataset.label_ids() if hasattr(dataset, "label_ids") else None
    if ids is not None and getattr(dataset, "categories", None):
        items = coco91_labelmap_items(dataset.categories)
    elif ids is not None:
        items = [BACKGROUND] + [(name, ids[name], name) for name in sorted(ids, key=ids.get)]
    else:
        items = [BACKGROUND] + [(name, index, name) for index, name in enumerate(dataset.classes, start=1)]
    labelmap = caffe_pb2.LabelMap()
    for name, label, display in items:
        item = labelmap.item.add()
        item.name, item.label, item.display_name = name, label, display
    return labelmap


def name_to_label(labelmap: caffe_pb2.LabelMap, path, strict: bool = False) -> Dict[str, int]:
    """{name: label} as MapNameToLabel builds it: with `strict` a name listed
    twice is an error; otherwise the last one wins. "N/A" placeholders never map."""
    if strict:
        twice = [name for name, count in Counter(item.name for item in labelmap.item).items() if count > 1 and name != "N/A"]
        if twice:
            raise FormatError(path, f"labelmap lists the name {twice[0]!r} more than once (--check-label)")
    return {item.name: item.label for item in labelmap.item if item.name != "N/A"}


def label_names(labelmap: caffe_pb2.LabelMap) -> Dict[int, str]:
    return {item.label: item.name for item in labelmap.item}


def labelmap_text(labelmap: caffe_pb2.LabelMap) -> str:
    return prototxt_text(labelmap)


def read_or_none(path: Path):
    return read_labelmap(path) if Path(path).exists() else None


def resolve_labelmap(dataset, path, check_label: bool = False):
    """(name -> label, label -> name, text to write at `path` or None): the
    labelmap at `path` when it exists, else one made from the dataset (to be
    written with the LMDB)."""
    existing = read_or_none(path)
    labelmap = existing if existing is not None else labelmap_from_dataset(dataset)
    mapping = name_to_label(labelmap, path, strict=check_label)
    return mapping, label_names(labelmap), (None if existing is not None else labelmap_text(labelmap))
