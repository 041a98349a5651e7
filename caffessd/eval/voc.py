"""VOC-style AP and mAP exactly as the SSD fork computes them at test time
(DetectionEvaluate layer, then Solver::TestDetection and ComputeAP in
src/caffe/util/bbox_util.cpp).

- AP per class from every detection's (score, true/false positive) and the
  number of non-difficult ground-truth boxes; `ap_version` is the fork's
  "11point" (VOC2007), "MaxIntegral" (VOC2012) or "Integral".
- mAP is the mean over ALL foreground classes of the labelmap, a class with no
  ground truth contributing AP 0 (the fork divides by the number of classes
  DetectionEvaluate reports, which is every class but background).

`VocAccumulator` keeps only per-detection arrays, so memory grows with the
number of detections, never with images. `voc_evaluate` is the one-call form
(what `caffessd train` uses for its test_interval mAP).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from caffessd.errors import CaffessdError
from caffessd.eval.matching import match_class

AP_VERSIONS = {"voc07": "11point", "voc12": "MaxIntegral", "integral": "Integral",
               "11point": "11point", "MaxIntegral": "MaxIntegral", "Integral": "Integral"}
EPS = 1e-6  # the fork's eps for "recall changed"


def precision_recall(scores: np.ndarray, positive: np.ndarray, num_positive: int) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative precision and recall in descending score order (stable for ties)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.cumsum(np.asarray(positive, dtype=np.int64)[order])
    fp = np.cumsum(1 - np.asarray(positive, dtype=np.int64)[order])
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / num_positive if num_positive > 0 else np.zeros_like(precision, dtype=np.float64)
    return precision, recall


def average_precision(scores, positive, num_positive: int, ap_version: str = "11point") -> float:
    """ComputeAP: AP of one class. 0 when there are no detections or no ground truth."""
    version = AP_VERSIONS.get(ap_version)
    if version is None:
        raise CaffessdError(f"unknown AP version {ap_version!r} (one of voc07, voc12, integral)")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) == 0 or num_positive == 0:
        return 0.0
    prec, rec = precision_recall(scores, positive, num_positive)
    if version == "11point":
        # Max precision at recall >= t for t = 0, 0.1, ..., 1 (0 where never reached).
        return float(sum(prec[rec >= t / 10.0].max(initial=0.0) for t in range(11)) / 11.0)
    if version == "MaxIntegral":
        # Walk back from the last point carrying the running max precision.
        ap, cur_rec, cur_prec = 0.0, rec[-1], prec[-1]
        for i in range(len(prec) - 2, -1, -1):
            cur_prec = max(prec[i], cur_prec)
            if abs(cur_rec - rec[i]) > EPS:
                ap += cur_prec * abs(cur_rec - rec[i])
            cur_rec = rec[i]
        return float(ap + cur_rec * cur_prec)
    ap, prev_rec = 0.0, 0.0                   # Integral: the plain area under the curve
    for p, r in zip(prec, rec):
        if abs(r - prev_rec) > EPS:
            ap += p * abs(r - prev_rec)
        prev_rec = r
    return float(ap)


@dataclass
class ClassCurve:
    """One class's evaluation: what the report prints and plots."""

    name: str
    ap: float
    num_positive: int
    num_detections: int
    precision: List[float] = field(default_factory=list)
    recall: List[float] = field(default_factory=list)


@dataclass
class VocResult:
    ap_version: str
    iou_threshold: float
    mean_ap: float
    classes: List[ClassCurve]

    def to_dict(self, curves: bool = False) -> dict:
        data = {"metric": "voc", "ap_version": self.ap_version, "iou_threshold": self.iou_threshold,
                "mAP": self.mean_ap, "per_class": {c.name: {"AP": c.ap, "ground_truth": c.num_positive,
                                                           "detections": c.num_detections} for c in self.classes}}
        if curves:
            for c in self.classes:
                data["per_class"][c.name]["precision"] = c.precision
                data["per_class"][c.name]["recall"] = c.recall
        return data


class VocAccumulator:
    """Collects (score, tp) per class image by image; `result()` gives AP and mAP.

    `classes`: the foreground class names (background excluded), in order."""

    def __init__(self, classes: Sequence[str], iou_threshold: float = 0.5, ap_version: str = "11point",
                 evaluate_difficult: bool = False):
        if ap_version not in AP_VERSIONS:
            raise CaffessdError(f"unknown AP version {ap_version!r} (one of voc07, voc12, integral)")
        self.classes = list(classes)
        self.iou_threshold = iou_threshold
        self.ap_version = AP_VERSIONS[ap_version]
        self.evaluate_difficult = evaluate_difficult
        self.num_positive = {name: 0 for name in self.classes}
        self._scores: Dict[str, List[np.ndarray]] = {name: [] for name in self.classes}
        self._positive: Dict[str, List[np.ndarray]] = {name: [] for name in self.classes}
        self.images = 0

    def add_image(self, detections: Iterable[Tuple[str, float, Sequence[float]]],
                  ground_truth: Iterable[Tuple[str, Sequence[float], bool]], where: str = "") -> None:
        """One image: detections as (class name, score, box), ground truth as
        (class name, box, difficult); boxes (xmin, ymin, xmax, ymax) in the
        same units for both (pixels or normalised)."""
        gt_by_class: Dict[str, Tuple[list, list]] = {}
        for name, box, difficult in ground_truth:
            self._check_class(name, "ground truth", where)
            boxes, flags = gt_by_class.setdefault(name, ([], []))
            boxes.append(box)
            flags.append(bool(difficult))
            if self.evaluate_difficult or not difficult:
                self.num_positive[name] += 1
        det_by_class: Dict[str, Tuple[list, list]] = {}
        for name, score, box in detections:
            self._check_class(name, "a detection", where)
            boxes, scores = det_by_class.setdefault(name, ([], []))
            boxes.append(box)
            scores.append(score)
        for name, (boxes, scores) in det_by_class.items():
            gt_boxes, gt_difficult = gt_by_class.get(name, ([], []))
            kept_scores, positive = match_class(np.asarray(boxes), np.asarray(scores), np.asarray(gt_boxes),
                                                gt_difficult, self.iou_threshold, self.evaluate_difficult)
            self._scores[name].append(kept_scores.astype(np.float32))
            self._positive[name].append(positive)
        self.images += 1

    def _check_class(self, name: str, what: str, where: str) -> None:
        if name not in self.num_positive:
            prefix = f"{where}: " if where else ""
            raise CaffessdError(f"{prefix}{what} has class {name!r}, which is not in the labelmap "
                                f"({', '.join(self.classes[:8])}{', ...' if len(self.classes) > 8 else ''})")

    def class_arrays(self, name: str) -> Tuple[np.ndarray, np.ndarray]:
        scores = np.concatenate(self._scores[name]) if self._scores[name] else np.zeros(0, np.float32)
        positive = np.concatenate(self._positive[name]) if self._positive[name] else np.zeros(0, bool)
        return scores, positive

    def result(self) -> VocResult:
        curves = []
        for name in self.classes:
            scores, positive = self.class_arrays(name)
            ap = average_precision(scores, positive, self.num_positive[name], self.ap_version)
            prec, rec = (precision_recall(scores, positive, self.num_positive[name])
                         if len(scores) and self.num_positive[name] else (np.zeros(0), np.zeros(0)))
            curves.append(ClassCurve(name, ap, self.num_positive[name], len(scores),
                                     _thin(prec), _thin(rec)))
        mean_ap = float(np.mean([c.ap for c in curves])) if curves else 0.0
        return VocResult(self.ap_version, self.iou_threshold, mean_ap, curves)


def _thin(values: np.ndarray, most: int = 2000) -> List[float]:
    """A curve short enough for report.json and plots (evenly spaced points plus the last)."""
    if len(values) > most:
        index = np.unique(np.append(np.linspace(0, len(values) - 1, most).astype(int), len(values) - 1))
        values = values[index]
    return [round(float(v), 6) for v in values]


def voc_evaluate(detections: Mapping[str, Iterable[Tuple[str, float, Sequence[float]]]],
                 ground_truth: Mapping[str, Iterable[Tuple[str, Sequence[float], bool]]],
                 classes: Sequence[str], iou_threshold: float = 0.5, ap_version: str = "11point",
                 evaluate_difficult: bool = False) -> VocResult:
    """mAP from per-image detections and ground truth, keyed by image name.

    detections[image] = [(class, score, (xmin, ymin, xmax, ymax)), ...];
    ground_truth[image] = [(class, box, difficult), ...]; classes: the
    foreground names. An image with detections but no ground-truth entry is an
    error (a typo in a key would silently count every detection as false)."""
    missing = [key for key in detections if key not in ground_truth]
    if missing:
        raise CaffessdError(f"detections for image {missing[0]!r}, which has no ground-truth entry "
                            f"({len(missing)} such image(s))")
    accumulator = VocAccumulator(classes, iou_threshold, ap_version, evaluate_difficult)
    for image, objects in ground_truth.items():
        accumulator.add_image(detections.get(image, ()), objects, where=image)
    return accumulator.result()
