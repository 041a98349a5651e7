"""Comparing one engine's results with another's: raw output blobs within a
tolerance relative to each blob's magnitude, and final detections matched
box by box with near-ties allowed to differ.

Near-ties: two engines computing the same float32 net in different orders
(fused kernels, other summation order) differ by ~1e-6 relative, so a
detection whose score is within `score_tol` of a cut-off can be on either
side of it. A detection found by only one engine is accepted only when it is
such a tie: its score within `score_tol` of the threshold, of the lowest kept
score when keep_top_k filled the list, or of an unmatched detection of the
same class in the other list (NMS kept the other of two near-equal boxes).
At most `max_ties` (default: 1 + 2% of the detections) are accepted.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def assert_blobs_close(ours: Dict[str, np.ndarray], reference: Dict[str, np.ndarray], names: Sequence[str],
                       rtol: float = 1e-4, what: str = "") -> Dict[str, float]:
    """Each named blob within rtol * max(|reference|, 1e-3); returns the worst relative difference per blob."""
    worst = {}
    for name in names:
        a = np.asarray(ours[name], dtype=np.float64)
        b = np.asarray(reference[name], dtype=np.float64)
        assert a.size == b.size, f"{what}{name}: {a.shape} vs reference {b.shape}"
        scale = max(float(np.abs(b).max()), 1e-3) if b.size else 1.0
        worst[name] = float(np.abs(a.reshape(b.shape) - b).max()) / scale if b.size else 0.0
        assert worst[name] <= rtol, f"{what}{name}: max difference {worst[name]:.2e} of the blob's magnitude > {rtol:.0e}"
    return worst


def _close(a, b, box_px: float, score_tol: float) -> bool:
    return (a.label == b.label and abs(a.score - b.score) <= score_tol
            and max(abs(p - q) for p, q in zip(a.box, b.box)) <= box_px)


def match_detections(ours: list, reference: list, *, threshold: float, keep_top_k: int = -1, box_px: float = 0.5,
                     score_tol: float = 1e-3, max_ties: int = None) -> dict:
    """Match caffessd Detection lists; assert every difference is a near-tie.
    Returns {"matched": n, "ties": n}."""
    left = list(ours)
    unmatched_ref = []
    for det in sorted(reference, key=lambda d: -d.score):
        hit = next((i for i, other in enumerate(left) if _close(other, det, box_px, score_tol)), None)
        if hit is None:
            unmatched_ref.append(det)
        else:
            left.pop(hit)
    matched = len(reference) - len(unmatched_ref)
    full = keep_top_k > 0 and max(len(ours), len(reference)) >= keep_top_k
    cutoff = min([d.score for d in list(ours) + list(reference)], default=threshold)
    ties = 0
    for det, others in [(d, left) for d in unmatched_ref] + [(d, unmatched_ref) for d in left]:
        near_threshold = abs(det.score - threshold) <= score_tol
        near_cutoff = full and abs(det.score - cutoff) <= score_tol
        swapped = any(o.label == det.label and abs(o.score - det.score) <= score_tol for o in others)
        assert near_threshold or near_cutoff or swapped, (
            f"detection {det.name} {det.score:.6f} {[round(v, 2) for v in det.box]} found by one engine only, "
            f"and not a near-tie ({matched} matched)")
        ties += 1
    limit = max_ties if max_ties is not None else 1 + len(reference) // 50
    assert ties <= limit, f"{ties} near-tie differences (more than {limit}) among {len(reference)} detections"
    return {"matched": matched, "ties": ties}


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def assert_same_faces(ours: list, reference: list, min_iou: float = 0.9) -> list:
    """Every reference face has a face of ours with IoU >= min_iou and none extra; returns the IoUs."""
    assert len(ours) == len(reference), f"{len(ours)} faces vs {len(reference)}"
    ious = []
    for det in reference:
        best = max((iou(det.box, o.box) for o in ours), default=0.0)
        assert best >= min_iou, f"face {[round(v) for v in det.box]}: best IoU {best:.3f} < {min_iou}"
        ious.append(best)
    return ious
