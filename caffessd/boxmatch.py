"""MatchBBox of the SSD fork (src/caffe/util/bbox_util.cpp) in numpy: which
priors a ground-truth box is matched to, bipartite first, then per prediction.

The core owns it because two layers above use the same decisions: the
trainer's MultiBoxLoss (caffessd.train.multibox) and the dataset analysis that
replays the matching on a net's priors (caffessd.analysis). `settings` is
anything with `match_type`, `overlap_threshold` and
`ignore_cross_boundary_bbox` (MultiBoxLossParameter's fields): MatchRule here,
or the trainer's Settings.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caffessd import caffe_pb2

P = caffe_pb2.MultiBoxLossParameter


@dataclass(frozen=True)
class MatchRule:
    """The MultiBoxLoss fields that decide matching (the fork's defaults)."""

    match_type: int = P.PER_PREDICTION
    overlap_threshold: float = 0.5
    ignore_cross_boundary_bbox: bool = False

    @classmethod
    def from_param(cls, param: caffe_pb2.MultiBoxLossParameter) -> "MatchRule":
        return cls(param.match_type, param.overlap_threshold, param.ignore_cross_boundary_bbox)


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """BBoxSize (normalised): 0 for inverted boxes."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.where((w < 0) | (h < 0), np.float32(0), w * h).astype(np.float32)


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) JaccardOverlap of corner boxes, in float32 like Caffe."""
    a = a.astype(np.float32)[:, None, :]
    b = b.astype(np.float32)[None, :, :]
    disjoint = (b[..., 0] > a[..., 2]) | (b[..., 2] < a[..., 0]) | (b[..., 1] > a[..., 3]) | (b[..., 3] < a[..., 1])
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = iw * ih
    union = box_sizes(a[:, 0])[:, None] + box_sizes(b[0])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where(disjoint | (iw <= 0) | (ih <= 0), np.float32(0), iou).astype(np.float32)


def cross_boundary(boxes: np.ndarray) -> np.ndarray:
    return ((boxes < 0) | (boxes > 1)).any(axis=1)


def match(gt_boxes: np.ndarray, pred_boxes: np.ndarray, settings: MatchRule):
    """MatchBBox for share_location (label -1): (indices, overlaps) per prediction.

    indices: -2 ignored cross-boundary, -1 unmatched, else the gt index.
    Bipartite first (greedy best pair, first in prior-then-gt order on ties),
    then for PER_PREDICTION each remaining prediction takes its best gt at or
    above overlap_threshold.
    """
    num_pred = len(pred_boxes)
    indices = np.full(num_pred, -1, np.int64)
    overlaps = np.zeros(num_pred, np.float32)
    if len(gt_boxes) == 0:
        return indices, overlaps
    iou = jaccard(pred_boxes, gt_boxes[:, 1:5])
    if settings.ignore_cross_boundary_bbox:
        ignored = cross_boundary(pred_boxes)
        indices[ignored] = -2
        iou[ignored] = 0
    kept = iou > 1e-6
    overlaps[:] = np.where(kept, iou, 0).max(axis=1)
    candidates = np.where(kept, iou, -1.0).astype(np.float32)
    for _ in range(len(gt_boxes)):
        available = np.where((indices == -1)[:, None], candidates, -1.0)
        flat = int(np.argmax(available))
        i, j = divmod(flat, len(gt_boxes))
        if available[i, j] <= -1:
            break
        indices[i] = j
        overlaps[i] = available[i, j]
        candidates[:, j] = -1.0
    if settings.match_type == P.PER_PREDICTION:
        good = np.where(kept & (iou >= settings.overlap_threshold), iou, -1.0)
        best = np.argmax(good, axis=1)
        best_overlap = good[np.arange(num_pred), best]
        take = (indices == -1) & (best_overlap > -1)
        indices[take] = best[take]
        overlaps[take] = best_overlap[take]
    return indices, overlaps
