"""Detection over many images: decoding and preprocessing on a thread pool
(caffessd.util.parallel.ordered_map) overlapping inference, images run `batch` at
a time through a model exported for that batch size, results in input order.

A batch model's DetectionOutput gives every row its image's index in column
0; the rows are split on it, so what an image gets does not depend on the
batch it ran in nor on the number of threads (tests/test_batching.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Union

import numpy as np

from caffessd.errors import FormatError
from caffessd.image.preprocess import load_image
from caffessd.inference.engines.base import workload_for
from caffessd.util.parallel import ordered_map
from caffessd.image.draw import annotate

ImageLike = Union[str, os.PathLike, np.ndarray]


@dataclass
class ImageResult:
    """One input's outcome: its detections, or the error that stopped it (a
    file that cannot be decoded does not stop the others)."""

    source: ImageLike
    image: Optional[np.ndarray]
    detections: list
    error: Optional[FormatError] = None


def model_batch(detector) -> Optional[int]:
    """The fixed batch size of the model's input; None when the axis is open
    (`export-onnx --batch dynamic`), so any number of images fits a run."""
    return detector.engine.batch


def _prepare(detector, load: Callable) -> Callable:
    def prepare(source):
        try:
            image = source if isinstance(source, np.ndarray) else load(source)
            return source, image, detector.prepare(image), None
        except FormatError as exc:
            return source, None, None, exc
    return prepare


def run_batch(detector, blobs: List[np.ndarray], batch: Optional[int]) -> List[np.ndarray]:
    """DetectionOutput rows of each blob, one run of `batch` images (the last
    batch of a fixed-batch model is topped up with copies of its first image,
    whose rows are dropped; None: the model takes any number)."""
    padding = [] if batch is None else [blobs[0]] * (batch - len(blobs))
    feed = blobs[0] if len(blobs) == 1 and not padding else np.concatenate(blobs + padding, axis=0)
    rows = detector.run_blob(feed)
    if batch == 1:
        return [rows]
    image_of_row = rows[:, 0].astype(np.int64)
    return [rows[image_of_row == index] for index in range(len(blobs))]


def detect_many(detector, images: Iterable[ImageLike], batch: Optional[int] = None, workers: int = 2,
                load: Callable = load_image, streams: int = 1) -> Iterator[ImageResult]:
    """Yield an ImageResult per image, in input order. `batch` defaults to the
    model's (export with `--batch N` for N > 1, or `--batch dynamic` for a
    model that takes any number, where it defaults to 1); `workers` threads decode and
    preprocess ahead of inference (0: inline); `streams` inference runs go
    on at once, each on its own thread (1: one run at a time).

    Several streams of a 1-thread session beat one run spread over every
    core on small CPUs: an SSD's layers are too small for intra-op threads
    to scale (about 1.6x from 2 threads on MobileNet-SSD 300, none on the
    face detector), while whole images run side by side scale fully."""
    fixed = model_batch(detector)
    batch = batch or fixed or 1
    if fixed is not None and batch != fixed:
        raise FormatError(detector.onnx_path, f"takes batches of {fixed} image(s), not {batch}; export it "
                                              f"with `caffessd export-onnx --batch {batch}` (or use --batch {fixed})")
    streams = max(1, int(streams))
    detector.engine.set_workload(workload_for(workers, streams))
    prepared = ordered_map(_prepare(detector, load), images, workers=workers,
                           ahead=max(2 * workers, 2 * batch * streams))
    finished = ordered_map(lambda group: list(_detect_group(detector, group, fixed)), _groups(prepared, batch),
                           workers=streams if streams > 1 else 0, ahead=streams)
    for results in finished:
        yield from results


def _groups(prepared: Iterable[tuple], batch: int) -> Iterator[list]:
    """Prepared items in runs of `batch` decodable ones, failures kept in their place."""
    waiting: list = []
    for item in prepared:
        waiting.append(item)
        if sum(1 for entry in waiting if entry[3] is None) == batch:
            yield waiting
            waiting = []
    if waiting:
        yield waiting


def _detect_group(detector, group: list, batch: Optional[int]) -> Iterator[ImageResult]:
    good = [item for item in group if item[3] is None]
    rows = iter(run_batch(detector, [item[2] for item in good], batch)) if good else iter(())
    for source, image, _, error in group:
        if error is not None:
            yield ImageResult(source, None, [], error)
        else:
            yield ImageResult(source, image, detector.to_detections(next(rows), image.shape[1], image.shape[0]))


class AnnotationWriter:
    """Writes annotated images on one background thread, off the detection
    path; `close()` waits for them and raises the first write error."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caffessd-writer")
        self.pending = []

    def submit(self, image: np.ndarray, detections: list, target: Path):
        self.pending.append(self.pool.submit(annotate, image, detections, target))
        # Bound memory: never more than a few images queued for writing.
        while len(self.pending) > 8:
            self.pending.pop(0).result()

    def close(self) -> None:
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pending.clear()
            self.pool.shutdown(wait=True)
