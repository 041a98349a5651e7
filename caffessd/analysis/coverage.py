"""The SSD fork's matching replayed over a dataset, on a net's own priors.

Per image, exactly what MultiBoxLoss does before it computes anything
(caffessd.boxmatch.match, the trainer's own code): every ground-truth box
first takes its best free prior (bipartite), then every other prior whose
IoU with some box reaches overlap_threshold takes that box (PER_PREDICTION).

Per object this records the best IoU any prior reaches, the layer of that
prior, how many priors were matched to it, whether one of them reaches the
threshold ("matched": a box that only the bipartite step gave a prior is
trained on one weak positive), and which prior layers serve it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from caffessd.analysis.groundtruth import GroundTruth
from caffessd.analysis.netpriors import NetPriors
from caffessd.boxmatch import jaccard, match
from caffessd.util.progress import Progress


@dataclass
class Coverage:
    """Per-object matching results (rows as in the GroundTruth table)."""

    truth: GroundTruth
    priors: NetPriors
    best_iou: np.ndarray          # (N,) best IoU of any prior
    best_layer: np.ndarray        # (N,) layer index of that prior
    matched_priors: np.ndarray    # (N,) priors matched to the object
    strong: np.ndarray            # (N,) a matched prior reaches overlap_threshold
    served: np.ndarray            # (N, L) bool: a prior of layer l is matched to the object
    positives: np.ndarray         # (L,) matched priors per layer, all images

    @property
    def threshold(self) -> float:
        return float(self.priors.rule.overlap_threshold)

    @property
    def objects(self) -> int:
        return len(self.best_iou)

    @property
    def matched(self) -> int:
        return int(self.strong.sum())

    @property
    def share(self) -> float:
        return self.matched / self.objects if self.objects else 0.0


def replay(truth: GroundTruth, priors: NetPriors, progress: bool = False) -> Coverage:
    """Match every image's boxes to `priors` as MultiBoxLoss would."""
    _, boxes, _ = truth.arrays()
    n, num_layers = len(boxes), len(priors.layers)
    best_iou = np.zeros(n, np.float32)
    best_layer = np.zeros(n, np.int64)
    matched = np.zeros(n, np.int64)
    strong = np.zeros(n, bool)
    served = np.zeros((n, num_layers), bool)
    positives = np.zeros(num_layers, np.int64)
    layer_of = priors.layer_of_prior
    threshold = np.float32(priors.rule.overlap_threshold)
    groups = truth.groups()
    with Progress(len(groups), "matching", unit="img", enabled=progress) as bar:
        for _, start, stop in groups:
            bar.update()
            gt = boxes[start:stop]
            indices, _ = match(np.column_stack([np.ones(len(gt), np.float32), gt]), priors.boxes, priors.rule)
            iou = jaccard(priors.boxes, gt)                       # (P, G)
            best = iou.argmax(axis=0)
            rows = slice(start, stop)
            best_iou[rows] = iou[best, np.arange(len(gt))]
            best_layer[rows] = layer_of[best]
            owner = indices[:, None] == np.arange(len(gt))[None, :]   # (P, G): prior p matched to box g
            matched[rows] = owner.sum(axis=0)
            strong[rows] = (owner & (iou >= threshold)).any(axis=0)
            for k, layer in enumerate(priors.layers):
                served[rows, k] = owner[layer.start:layer.stop].any(axis=0)
                positives[k] += int((indices[layer.start:layer.stop] >= 0).sum())
    return Coverage(truth, priors, best_iou, best_layer, matched, strong, served, positives)


def coverage_of(truth: GroundTruth, priors: NetPriors, rows: Optional[np.ndarray] = None) -> float:
    """Share of objects matched at the threshold (all rows, or `rows`)."""
    result = replay(truth, priors)
    values = result.strong if rows is None else result.strong[rows]
    return float(values.mean()) if len(values) else 0.0
