"""Small AnnotatedDatum LMDBs for the train-input tests, written as the SSD
fork's convert_annoset does (key %08d_name, type BBOX, one AnnotationGroup
per label, instance ids counting within a group, boxes normalised)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from caffessd import caffe_pb2


def annotated_datum(image_bgr: np.ndarray, objects, encode: str = ".png") -> caffe_pb2.AnnotatedDatum:
    """objects: (label, (xmin, ymin, xmax, ymax) in pixels, difficult)."""
    import cv2

    h, w = image_bgr.shape[:2]
    datum = caffe_pb2.AnnotatedDatum()
    datum.type = caffe_pb2.AnnotatedDatum.BBOX
    d = datum.datum
    d.channels, d.height, d.width = 3, h, w
    if encode:
        d.data = cv2.imencode(encode, image_bgr)[1].tobytes()
        d.encoded = True
    else:
        d.data = np.ascontiguousarray(image_bgr.transpose(2, 0, 1)).tobytes()
    groups = {}
    for label, (x0, y0, x1, y1), difficult in objects:
        group = groups.get(label)
        if group is None:
            group = groups[label] = datum.annotation_group.add()
            group.group_label = label
        annotation = group.annotation.add()
        annotation.instance_id = len(group.annotation) - 1
        b = annotation.bbox
        b.xmin, b.ymin, b.xmax, b.ymax = x0 / w, y0 / h, x1 / w, y1 / h
        b.difficult = bool(difficult)
    return datum


def synthetic_items(count: int, seed: int = 0, size=(120, 160)):
    """Images with coloured rectangles, and their boxes."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        h, w = size if i % 2 == 0 else (size[1], size[0])
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        objects = []
        for k in range(int(rng.integers(0 if i == 1 else 1, 4))):
            bw, bh = int(rng.integers(10, w // 2)), int(rng.integers(10, h // 2))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            label = int(rng.integers(1, 4))
            image[y0:y0 + bh, x0:x0 + bw] = (60 * label, 255 - 60 * label, 128)
            objects.append((label, (x0, y0, x0 + bw, y0 + bh), k == 2))
        items.append((f"img{i:03d}", image, objects))
    return items


def noise_items(count: int, min_side: int = 40, seed: int = 0, size=(375, 500), classes: int = 20):
    """VOC-sized noise images with 1-4 random boxes each: the training
    benchmarks' input, where only the cost per image matters, not what is learnt."""
    rng = np.random.default_rng(seed)
    height, width = size
    items = []
    for i in range(count):
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        objects = []
        for _ in range(int(rng.integers(1, 5))):
            w, h = int(rng.integers(min_side, 250)), int(rng.integers(min_side, 180))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            objects.append((int(rng.integers(1, classes + 1)), (x, y, x + w, y + h), False))
        items.append((f"img{i:05d}", image, objects))
    return items


def write_lmdb(path: Path, items, encode: str = ".png") -> Path:
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, (name, image, objects) in enumerate(items):
            txn.put(f"{i:08d}_{name}".encode(), annotated_datum(image, objects, encode).SerializeToString())
    env.close()
    return path
