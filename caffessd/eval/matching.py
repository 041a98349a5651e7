"""Matching detections to ground truth in one image, as the SSD fork's
DetectionEvaluate layer does (src/caffe/layers/detection_evaluate_layer.cpp).

Per class: detections in descending score order each take the ground-truth box
of highest IoU (the first one on a tie); at or above the IoU threshold that box
is a true positive if not yet taken, a false positive if taken (duplicate);
below, a false positive. A detection whose best box is `difficult` (and
difficult boxes are not evaluated) is neither: it is dropped, as the fork
writes tp = fp = 0 for it, which adds nothing to either cumulative sum.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in `boxes_a` (N x 4) with every box in `boxes_b`
    (M x 4), corners (xmin, ymin, xmax, ymax), area = width x height with no
    +1: the fork's JaccardOverlap on normalised boxes. The ratio does not
    change when both are scaled by the image size, so pixels work too."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    # An untrained net can decode infinite boxes (exp overflow): their sizes
    # come out inf or NaN and their IoU 0, quietly.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
        iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
        ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
        iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        # BBoxSize: a box with xmax < xmin (or ymax < ymin) has size 0.
        area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
        area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
        union = area_a[:, None] + area_b[None, :] - inter
        return np.where((inter > 0) & (union > 0), inter / np.where(union > 0, union, 1), 0.0)


def match_class(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray,
                gt_difficult: Sequence[bool], iou_threshold: float = 0.5,
                evaluate_difficult: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one class in one image.

    Returns (scores, is_true_positive) for the detections that count, in
    descending score order (a stable sort: equal scores keep input order)."""
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-det_scores, kind="stable")
    det_boxes, det_scores = det_boxes[order], det_scores[order]
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if len(gt_boxes) == 0:
        return det_scores, np.zeros(len(det_scores), dtype=bool)
    difficult = np.asarray(gt_difficult, dtype=bool).reshape(-1)
    overlaps = iou_matrix(det_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    keep = np.ones(len(det_scores), dtype=bool)
    positive = np.zeros(len(det_scores), dtype=bool)
    for i in range(len(det_scores)):
        best = int(np.argmax(overlaps[i]))   # first maximum, like the fork's strict '>'
        if overlaps[i, best] < iou_threshold:
            continue                          # false positive
        if difficult[best] and not evaluate_difficult:
            keep[i] = False                   # neither counts nor penalises
        elif not taken[best]:
            taken[best] = True
            positive[i] = True
        # else: a duplicate of a taken box, false positive
    return det_scores[keep], positive[keep]
