"""Dataset records -> the ground truth a train net's MultiBoxLoss receives.

As make-lmdb writes them (caffessd.datasets.annotated): each corner divided
by the annotation's image size in float32; regions flagged `ignore` kept as
difficult boxes clipped to the image; then the data layer's resize: WARP
keeps normalised boxes as they are, FIT_LARGE_SIZE_AND_PAD shrinks them into
the letterbox. Boxes that make-lmdb would refuse (inverted, empty, outside
the image) are left out and counted: lint-dataset names them.

The table keeps one row per object, grouped by image, so the matching can be
replayed on other priors without reading the dataset again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from caffessd.datasets.annotated import normalise
from caffessd.util.progress import Progress


@dataclass
class GroundTruth:
    """Objects of a dataset, one row each, rows of an image contiguous."""

    image_names: List[str] = field(default_factory=list)
    image_sizes: List[Tuple[int, int]] = field(default_factory=list)    # (width, height) of each image
    image: List[int] = field(default_factory=list)                       # row -> image index
    labels: List[str] = field(default_factory=list)
    boxes: List[Tuple[float, float, float, float]] = field(default_factory=list)   # normalised, net input
    pixels: List[Tuple[float, float]] = field(default_factory=list)      # (width, height) in image pixels
    difficult: List[bool] = field(default_factory=list)
    empty_images: int = 0
    invalid: int = 0            # boxes make-lmdb refuses (not in the table)
    difficult_left_out: int = 0  # difficult boxes when the loss has use_difficult_gt: false

    def arrays(self):
        """(image index (N,), boxes (N, 4) float32, pixel sizes (N, 2))."""
        return (np.asarray(self.image, np.int64), np.asarray(self.boxes, np.float32).reshape(-1, 4),
                np.asarray(self.pixels, np.float64).reshape(-1, 2))

    def __len__(self) -> int:
        return len(self.image)

    def groups(self):
        """(image index, first row, stop row) of each image with objects."""
        image = np.asarray(self.image, np.int64)
        if not len(image):
            return []
        cuts = np.flatnonzero(np.diff(image)) + 1
        starts = np.concatenate([[0], cuts])
        stops = np.concatenate([cuts, [len(image)]])
        return [(int(image[s]), int(s), int(e)) for s, e in zip(starts, stops)]


def letterbox(boxes: np.ndarray, width: int, height: int, input_hw: Tuple[int, int]) -> np.ndarray:
    """Normalised boxes of a `width` x `height` image placed by FIT_LARGE_SIZE_AND_PAD in `input_hw`."""
    in_h, in_w = input_hw
    aspect, target = width / height, in_w / in_h
    if aspect > target:
        pad = (in_h - in_w / aspect) / 2 / in_h
        return np.stack([boxes[:, 0], pad + boxes[:, 1] * (1 - 2 * pad), boxes[:, 2],
                         pad + boxes[:, 3] * (1 - 2 * pad)], axis=1).astype(np.float32)
    pad = (in_w - in_h * aspect) / 2 / in_w
    return np.stack([pad + boxes[:, 0] * (1 - 2 * pad), boxes[:, 1], pad + boxes[:, 2] * (1 - 2 * pad),
                     boxes[:, 3]], axis=1).astype(np.float32)


def record_objects(record, use_difficult_gt: bool = True):
    """(kept [(label, pixel box, difficult)], invalid count, difficult left out) for one record."""
    kept, invalid, left_out = [], 0, 0
    for obj in record.objects:
        xmin, ymin, xmax, ymax = (float(v) for v in obj.box)
        difficult = bool(obj.difficult)
        if obj.ignore:  # make-lmdb's default (--ignored difficult): clipped, difficult
            xmin, ymin, xmax, ymax = max(xmin, 0.0), max(ymin, 0.0), min(xmax, record.width), min(ymax, record.height)
            difficult = True
        if not (xmin < xmax and ymin < ymax) or xmin < 0 or ymin < 0 or xmax > record.width or ymax > record.height:
            invalid += 1
            continue
        if difficult and not use_difficult_gt:
            left_out += 1
            continue
        kept.append((obj.label, (xmin, ymin, xmax, ymax), difficult))
    return kept, invalid, left_out


def collect(dataset, input_hw: Tuple[int, int], resize_mode: str = "WARP", use_difficult_gt: bool = True,
            limit: Optional[int] = None, progress: bool = True) -> GroundTruth:
    """Read every record once (annotations and image headers only)."""
    truth = GroundTruth()
    total = len(dataset) if hasattr(dataset, "__len__") else None
    if limit is not None and total is not None:
        total = min(total, limit)
    with Progress(total, "reading boxes", unit="img", enabled=progress) as bar:
        for index, record in enumerate(dataset):
            if limit is not None and index >= limit:
                break
            bar.update()
            add_record(truth, record, input_hw, resize_mode, use_difficult_gt)
    return truth


def add_record(truth: GroundTruth, record, input_hw, resize_mode: str, use_difficult_gt: bool) -> None:
    image_index = len(truth.image_names)
    truth.image_names.append(record.name)
    truth.image_sizes.append((int(record.width), int(record.height)))
    kept, invalid, left_out = record_objects(record, use_difficult_gt)
    truth.invalid += invalid
    truth.difficult_left_out += left_out
    if not kept:
        truth.empty_images += 1
        return
    width, height = int(record.width), int(record.height)
    boxes = np.asarray([(normalise(x0, width), normalise(y0, height), normalise(x1, width), normalise(y1, height))
                        for _, (x0, y0, x1, y1), _ in kept], np.float32)
    if resize_mode == "FIT_LARGE_SIZE_AND_PAD":
        boxes = letterbox(boxes, width, height, input_hw)
    for (label, (x0, y0, x1, y1), difficult), box in zip(kept, boxes):
        truth.image.append(image_index)
        truth.labels.append(label)
        truth.boxes.append(tuple(float(v) for v in box))
        truth.pixels.append((x1 - x0, y1 - y0))
        truth.difficult.append(difficult)
