"""Track ids across frames: SORT (Bewley, Ge, Ott, Ramos and Upcroft, "Simple
Online and Realtime Tracking", ICIP 2016; reference code github.com/abewley/sort).

As in the paper and its reference code:
- each object is a Kalman filter over [cx, cy, s, r, vcx, vcy, vs] (box
  centre, area, aspect ratio; constant velocity, the aspect ratio constant),
  with the reference code's noise: R = diag(1, 1, 10, 10), initial P =
  diag(10, 10, 10, 10, 1e4, 1e4, 1e4), Q = diag(1, 1, 1, 1, .01, .01, 1e-4);
  an area that would turn negative stops shrinking;
- each frame the tracks are predicted, then detections are assigned to the
  predictions by the Hungarian algorithm on IoU; pairs under `iou_threshold`
  (0.3) stay apart; unmatched detections start tracks; a track unmatched for
  more than `max_age` frames is dropped;
- a track is reported once it has `min_hits` (3) matches in a row, or at
  once in the first `min_hits` frames of the video.

Differences, each stated where it lives:
- association runs within each class (a detector's labels are trusted: a
  "person" never continues a "car" track);
- `max_age` is 30 frames, not 1 (the paper's MOT setting), so an object hidden
  for a few frames keeps its id; the prediction carries it across the gap;
- a track reported once stays reported whenever it is matched (the reference
  code hides a track again for `min_hits` frames after any miss, so an
  object reappearing from behind an occluder would go unlabelled for three
  frames; ByteTrack's "activated" tracks behave as here).
Reported boxes are the detections' own (as detect finds them); the filter
only associates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from caffessd.inference.detector import Detection

# Constant velocity over [cx, cy, s, r, vcx, vcy, vs]: position += velocity each frame.
_F = np.eye(7)
_F[0, 4] = _F[1, 5] = _F[2, 6] = 1.0
_H = np.eye(4, 7)
_R = np.diag([1.0, 1.0, 10.0, 10.0])
_P0 = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])
_Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 1e-4])


@dataclass
class TrackedDetection(Detection):
    """A Detection with the id of the track it belongs to (None: not yet a
    reported track)."""

    track: Optional[int] = None

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["track"] = self.track
        return data


def box_to_z(box) -> np.ndarray:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return np.array([x0 + w / 2.0, y0 + h / 2.0, w * h, w / float(h) if h else 0.0])


def z_to_box(x) -> np.ndarray:
    """[cx, cy, s, r, ...] -> [x0, y0, x1, y1]; NaN when area x ratio is not positive."""
    product = x[2] * x[3]
    if not product > 0:
        return np.full(4, np.nan)
    w = np.sqrt(product)
    h = x[2] / w
    return np.array([x[0] - w / 2.0, x[1] - h / 2.0, x[0] + w / 2.0, x[1] + h / 2.0])


class KalmanBoxTrack:
    """One object's filter and bookkeeping (SORT's KalmanBoxTracker)."""

    def __init__(self, box, label: int, track_id: int):
        self.x = np.zeros(7)
        self.x[:4] = box_to_z(box)
        self.P = _P0.copy()
        self.label = label
        self.id = track_id
        self.time_since_update = 0
        self.hits = 0
        self.hit_streak = 0
        self.age = 0
        self.reported = False

    def predict(self) -> np.ndarray:
        if self.x[6] + self.x[2] <= 0:
            self.x[6] = 0.0
        self.x = _F @ self.x
        self.P = _F @ self.P @ _F.T + _Q
        self.age += 1
        if self.time_since_update > 0:
            self.hit_streak = 0
        self.time_since_update += 1
        return z_to_box(self.x)

    def update(self, box) -> None:
        """Kalman update with a matched detection (Joseph form, as filterpy)."""
        innovation = box_to_z(box) - _H @ self.x
        covariance = _H @ self.P @ _H.T + _R
        gain = self.P @ _H.T @ np.linalg.inv(covariance)
        self.x = self.x + gain @ innovation
        keep = np.eye(7) - gain @ _H
        self.P = keep @ self.P @ keep.T + gain @ _R @ gain.T
        self.time_since_update = 0
        self.hits += 1
        self.hit_streak += 1


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in `boxes_a` (N x 4) with every box in `boxes_b` (M x 4)."""
    a = boxes_a[:, None, :]
    b = boxes_b[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def linear_assignment(cost) -> Tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a minimum-cost assignment of a rectangular cost
    matrix (every row or every column assigned, whichever is fewer), as
    scipy.optimize.linear_sum_assignment returns them (rows ascending).

    The Hungarian method with row and column potentials, one shortest
    augmenting path per row: O(n^2 m), exact, fine for the tens of boxes a
    frame holds; it keeps scipy out of the video extra."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError("the cost matrix must be 2-d")
    if cost.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    transposed = cost.shape[0] > cost.shape[1]
    a = cost.T if transposed else cost
    n, m = a.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, np.int64)    # owner[j]: the row (1-based) holding column j; 0 = free
    way = np.zeros(m + 1, np.int64)
    for row in range(1, n + 1):
        owner[0] = row
        column = 0
        slack = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[column] = True
            current = owner[column]
            reduced = a[current - 1] - u[current] - v[1:]
            free = ~used[1:]
            better = free & (reduced < slack[1:])
            slack[1:][better] = reduced[better]
            way[1:][better] = column
            candidates = np.flatnonzero(free) + 1
            nearest = candidates[np.argmin(slack[candidates])]
            delta = slack[nearest]
            visited = np.flatnonzero(used)
            u[owner[visited]] += delta
            v[visited] -= delta
            slack[candidates] -= delta
            column = nearest
            if owner[column] == 0:
                break
        while column:
            previous = way[column]
            owner[column] = owner[previous]
            column = previous
    columns = np.flatnonzero(owner[1:])
    rows = owner[1:][columns] - 1
    if transposed:
        rows, columns = columns, rows
    order = np.argsort(rows)
    return rows[order], columns[order]


class Sort:
    """SORT over a video's frames: `update(detections)` once per frame (even
    with none) returns them as TrackedDetections, in the same order."""

    def __init__(self, max_age: int = 30, min_hits: int = 3, iou_threshold: float = 0.3):
        self.max_age = max_age
        self.min_hits = min_hits
        self.iou_threshold = iou_threshold
        self.tracks: List[KalmanBoxTrack] = []
        self.frame_count = 0
        self.reported = 0       # tracks reported so far (ids handed out)
        self._next_id = 1

    @property
    def live_ids(self) -> set:
        return {track.id for track in self.tracks}

    def update(self, detections: Sequence[Detection]) -> List[TrackedDetection]:
        self.frame_count += 1
        predicted = {}
        for track in list(self.tracks):
            box = track.predict()
            if np.any(np.isnan(box)):
                self.tracks.remove(track)
            else:
                predicted[id(track)] = box
        owner: Dict[int, KalmanBoxTrack] = {}
        for label in sorted({d.label for d in detections}):
            owner.update(self._associate(detections, label, predicted))
        out = []
        for index, det in enumerate(detections):
            track = owner[index]
            if not track.reported and (track.hit_streak >= self.min_hits or self.frame_count <= self.min_hits):
                track.reported = True
                self.reported += 1
            out.append(TrackedDetection(det.label, det.name, det.score, det.box, det.box_normalized,
                                        track=track.id if track.reported else None))
        self.tracks = [t for t in self.tracks if t.time_since_update <= self.max_age]
        return out

    def _associate(self, detections, label: int, predicted: dict) -> Dict[int, KalmanBoxTrack]:
        """Match this class's detections to its tracks' predictions; start
        tracks for the rest. Returns {detection index: track}."""
        indices = [i for i, d in enumerate(detections) if d.label == label]
        tracks = [t for t in self.tracks if t.label == label and id(t) in predicted]
        owner = {}
        unmatched = set(indices)
        if tracks:
            boxes = np.array([detections[i].box for i in indices], dtype=np.float64)
            overlap = iou_matrix(boxes, np.array([predicted[id(t)] for t in tracks]))
            for row, column in zip(*linear_assignment(-overlap)):
                if overlap[row, column] >= self.iou_threshold:
                    tracks[column].update(detections[indices[row]].box)
                    owner[indices[row]] = tracks[column]
                    unmatched.discard(indices[row])
        for index in sorted(unmatched):
            track = KalmanBoxTrack(detections[index].box, label, self._next_id)
            self._next_id += 1
            self.tracks.append(track)
            owner[index] = track
        return owner
