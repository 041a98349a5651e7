"""TensorBoard event files of a training run (tf.summary), the field's viewer for
training curves: `tensorboard --logdir DIR`.

Written by the trainer (`caffessd train --tensorboard DIR`, by default
PREFIX_tensorboard/ beside the snapshots), at the steps it logs them:

    loss/smoothed        the smoothed loss of "Iteration N, loss = ..." (average_loss)
    loss/<top>           each train-net output of "Train net output #k: <top> = ..."
    loss/loc, loss/conf  MultiBoxLoss's localisation and confidence terms (their sum is the loss)
    learning_rate        the rate of "Iteration N, lr = ..."
    test/detection_eval  the test mAP ("Test net output #0: detection_eval"), per test net
    test/detections      the first TEST_IMAGES test images with the boxes predicted at or
                         above SCORE_THRESHOLD (class colour, name and score) over the
                         ground truth (thin white)

Scalars are written at every iteration, so that the curves are whole even with
a sparse `display`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from caffessd.errors import CaffessdError
from caffessd.image.draw import drawn
from caffessd.inference.detector import Detection
from caffessd.inference.engines.base import MissingRuntime, require_runtime
from caffessd.train.show import blob_to_image
from caffessd.train.tfimport import tensorflow

TEST_IMAGES = 4          # test images shown with their detections at each test
SCORE_THRESHOLD = 0.5    # detections drawn at or above this score
MAX_BOXES = 20           # per image, highest scores first


def require_tensorboard() -> None:
    """tf.summary writes through the tensorboard package, which TensorFlow 2.20 and
    later no longer install: without it the first scalar would raise mid-run."""
    try:
        require_runtime("tensorboard", "tensorboard", "tf", who="writing TensorBoard event files")
    except MissingRuntime as exc:
        raise CaffessdError(f"{exc}, or train with --no-tensorboard") from None


class TestSample:
    """One preprocessed test image ([3, H, W] float, the data layer's blob) with the
    DetectionOutput rows predicted for it and its ground-truth rows (both normalised)."""

    def __init__(self, blob: np.ndarray, detections: np.ndarray, truth: np.ndarray):
        self.blob = blob
        self.detections = detections   # [K, 7]: image, label, score, xmin, ymin, xmax, ymax
        self.truth = truth             # [M, 8]: image, label, instance, xmin, ymin, xmax, ymax, difficult


class TrainingSummaries:
    """One run's event files; scalars and images at explicit steps (iterations)."""

    def __init__(self, logdir):
        require_tensorboard()
        tf = tensorflow()
        self.tf = tf
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.writer = tf.summary.create_file_writer(str(self.logdir))

    def iteration(self, step: int, smoothed_loss: float, outputs: Dict[str, float], parts: Dict[str, float],
                  rate: float) -> None:
        tf = self.tf
        with self.writer.as_default(step=step):
            tf.summary.scalar("loss/smoothed", smoothed_loss)
            for top, value in outputs.items():
                tf.summary.scalar(f"loss/{top}", value)
            for key, value in parts.items():
                tf.summary.scalar(f"loss/{key}", value)
            tf.summary.scalar("learning_rate", rate)

    def test(self, step: int, index: int, value: float) -> None:
        tag = "test/detection_eval" if index == 0 else f"test/detection_eval_net{index}"
        with self.writer.as_default(step=step):
            self.tf.summary.scalar(tag, value)
        self.writer.flush()

    def images(self, step: int, samples: Sequence[TestSample], mean, scale: float,
               names: Optional[Dict[int, str]] = None) -> None:
        if not samples:
            return
        pictures = np.stack([detection_picture(s, mean, scale, names) for s in samples])
        with self.writer.as_default(step=step):
            self.tf.summary.image("test/detections", pictures, max_outputs=len(samples))
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def detection_picture(sample: TestSample, mean, scale: float, names: Optional[Dict[int, str]] = None,
                      threshold: Optional[float] = None) -> np.ndarray:
    """RGB uint8 [H, W, 3]: the test image with its confident detections and ground truth."""
    threshold = SCORE_THRESHOLD if threshold is None else threshold
    image = blob_to_image(sample.blob, mean, scale)
    h, w = image.shape[:2]
    rows = [r for r in sample.detections if r[2] >= threshold and np.all(np.isfinite(r[3:7]))]
    rows.sort(key=lambda r: -float(r[2]))
    boxes: List[Detection] = []
    for row in rows[:MAX_BOXES]:
        norm = _ordered_clipped(row[3:7])
        label = int(row[1])
        boxes.append(Detection(label=label, name=(names or {}).get(label, str(label)), score=float(row[2]),
                               box=(norm[0] * w, norm[1] * h, norm[2] * w, norm[3] * h), box_normalized=norm))
    outlines = []
    for row in sample.truth:
        x0, y0, x1, y1 = _ordered_clipped(row[3:7])
        outlines.append((x0 * w, y0 * h, x1 * w, y1 * h))
    return drawn(image, boxes, outlines)


def _ordered_clipped(box) -> tuple:
    """A normalised box with min <= max corners inside the image (an untrained net's boxes
    can be inverted or far outside)."""
    x0, y0, x1, y1 = (float(np.clip(v, 0.0, 1.0)) for v in box)
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
