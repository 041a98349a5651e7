"""Best IoU of boxes against a PriorBox layer's grid, without building the grid.

Every prior of a layer is one of K shapes centred on a regular grid. For a
fixed shape the overlap with a box shrinks as the centres move apart along
either axis, so the best prior of that shape sits at one of the grid centres
next to the box's centre; three per axis cover clipped priors at the border.
Unclipped, a prior's area does not depend on where it sits, so the best
intersection is the best overlap along x times the best along y.
That is 9 * K candidates per box and layer instead of every prior, which
lets the --suggest search try hundreds of prior settings in seconds. The
reported coverage never comes from here: it is replayed with the full
matcher (caffessd.analysis.coverage).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from caffessd import caffe_pb2
from caffessd.priorbox import cell_box_sizes, prior_boxes


@dataclass
class PriorGrid:
    """One layer's priors as centres (normalised) and shapes (normalised w, h)."""

    xs: np.ndarray
    ys: np.ndarray
    sizes: np.ndarray
    clip: bool


def grid_of(param: caffe_pb2.PriorBoxParameter, feature_hw: Tuple[int, int], image_hw: Tuple[int, int],
            centres: Optional[PriorGrid] = None) -> PriorGrid:
    """The layer's grid; `centres` (a grid of the same layer) saves recomputing
    the centres when only the sizes change."""
    if centres is None:
        unclipped = caffe_pb2.PriorBoxParameter()
        unclipped.CopyFrom(param)
        unclipped.clip = False
        boxes = prior_boxes(unclipped, feature_hw, image_hw)[0, 0].reshape(feature_hw[0], feature_hw[1], -1, 4)
        boxes = boxes.astype(np.float64)
        xs = (boxes[0, :, 0, 0] + boxes[0, :, 0, 2]) / 2
        ys = (boxes[:, 0, 0, 1] + boxes[:, 0, 0, 3]) / 2
    else:
        xs, ys = centres.xs, centres.ys
    img_h, img_w = _image_size(param, image_hw)
    sizes = np.asarray(cell_box_sizes(param), np.float64) / np.array([img_w, img_h])
    return PriorGrid(xs, ys, sizes, bool(param.clip))


def _image_size(param: caffe_pb2.PriorBoxParameter, image_hw) -> Tuple[float, float]:
    """The image size PriorBox divides by (img_h/img_w or img_size, else the data blob's)."""
    if param.HasField("img_h") or param.HasField("img_w"):
        return float(param.img_h), float(param.img_w)
    if param.HasField("img_size"):
        return float(param.img_size), float(param.img_size)
    return float(image_hw[0]), float(image_hw[1])


def _neighbours(centres: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(N, 3) indices of the grid centres around each value."""
    nearest = np.clip(np.searchsorted(centres, values), 0, len(centres) - 1)
    options = nearest[:, None] + np.array([-1, 0, 1])[None, :]
    return np.clip(options, 0, len(centres) - 1)


def grid_best_iou(boxes: np.ndarray, grid: PriorGrid) -> np.ndarray:
    """(N,) best IoU of each normalised box with any prior of the grid."""
    boxes = np.asarray(boxes, np.float64)
    if not len(boxes):
        return np.zeros(0)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    w, h = grid.sizes[:, 0], grid.sizes[:, 1]                     # (K,)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[:, None]
    if not grid.clip:
        # Prior areas do not move with the centre: the best intersection is the
        # best overlap along x times the best along y.
        px = grid.xs[_neighbours(grid.xs, cx)][:, :, None]       # (N, 3, 1)
        py = grid.ys[_neighbours(grid.ys, cy)][:, :, None]
        ox = np.minimum(px + w / 2, boxes[:, None, None, 2]) - np.maximum(px - w / 2, boxes[:, None, None, 0])
        oy = np.minimum(py + h / 2, boxes[:, None, None, 3]) - np.maximum(py - h / 2, boxes[:, None, None, 1])
        inter = np.clip(ox, 0, None).max(axis=1) * np.clip(oy, 0, None).max(axis=1)   # (N, K)
        union = w * h + area - inter
        return (inter / np.where(union > 0, union, 1)).max(axis=1)
    px = grid.xs[_neighbours(grid.xs, cx)][:, :, None, None]     # (N, 3, 1, 1)
    py = grid.ys[_neighbours(grid.ys, cy)][:, None, :, None]     # (N, 1, 3, 1)
    x0, x1, y0, y1 = (np.clip(v, 0, 1) for v in (px - w / 2, px + w / 2, py - h / 2, py + h / 2))
    b = boxes[:, None, None, None, :]
    iw = np.clip(np.minimum(x1, b[..., 2]) - np.maximum(x0, b[..., 0]), 0, None)
    ih = np.clip(np.minimum(y1, b[..., 3]) - np.maximum(y0, b[..., 1]), 0, None)
    inter = iw * ih
    union = (x1 - x0) * (y1 - y0) + area[:, :, None, None] - inter
    return (inter / np.where(union > 0, union, 1)).reshape(len(boxes), -1).max(axis=1)


def best_iou(boxes: np.ndarray, grids: Sequence[PriorGrid]) -> Tuple[np.ndarray, np.ndarray]:
    """(best IoU, layer of the best prior) of each box over all layers."""
    per_layer: List[np.ndarray] = [grid_best_iou(boxes, grid) for grid in grids]
    stacked = np.stack(per_layer, axis=1) if per_layer else np.zeros((len(boxes), 1))
    return stacked.max(axis=1), stacked.argmax(axis=1)
