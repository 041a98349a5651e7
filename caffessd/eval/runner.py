"""Streaming evaluation: decode -> preprocess (thread pool, bounded, in
order) overlapping inference -> match, keeping only per-detection arrays
(scores and true/false positive flags for VOC, result rows for COCO and
WIDER), never images or raw outputs; memory stays flat whatever the
dataset's size.

    from caffessd import evaluate
    result = evaluate("model.onnx", "VOCdevkit", "voc07", format="voc", split="test")
    print(result.summary["mAP"])
"""
from __future__ import annotations

import itertools
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from caffessd.errors import CaffessdError, FormatError
from caffessd.eval.models import LoadedModel, model_num_classes, load_detector, model_names, name_labels
from caffessd.datasets import open_dataset
from caffessd.datasets.open import FORMATS
from caffessd.protoio import labelmap_names
from caffessd.util.parallel import ordered_map
from caffessd.image.preprocess import load_image
from caffessd.inference.engines.base import workload_for
from caffessd.util.progress import Progress
from caffessd.eval.wider import find_ground_truth_dir, key_for, load_ground_truth, wider_evaluate, write_results
from caffessd.eval.voc import VocAccumulator
from caffessd.eval.coco import CocoAccumulator

METRICS = ("voc07", "voc12", "integral", "coco", "wider")


@dataclass
class EvalResult:
    """One model's evaluation. `summary` holds the headline numbers (mAP, or
    COCO's AP/AP50/..., or WIDER's easy/medium/hard), `per_class` AP per class
    (VOC, COCO) and `curves` what the plots draw."""

    model: str
    source: str
    metric: str
    images: int
    seconds: float
    summary: Dict[str, float]
    per_class: Dict[str, dict] = field(default_factory=dict)
    curves: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    engine: str = ""    # what ran it, Engine.label(): "onnxruntime", "openvino bf16", "onnxruntime cuda"

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"model": self.model, "source": self.source, "metric": self.metric, "images": self.images,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 2),
                "engine": self.engine, "summary": self.summary, "per_class": self.per_class}


# Evaluation reads the held-out split (as the SSD recipe's test.sh): VOC's `test`, not
# make-lmdb's trainval default; the other formats' defaults are already their val splits.
EVAL_SPLITS = {"voc": "test"}


def open_eval_dataset(dataset, format: Optional[str], split: Optional[str], labelmap=None,
                      allow_outside: bool = False, images=None, annotations=None):
    """A reader for a path (with its format), or the given dataset/iterable as is.
    Entries naming files outside the dataset folder are refused unless `allow_outside`."""
    if isinstance(dataset, (str, Path)):
        if format is None:
            raise CaffessdError(f"a dataset path needs its format ({', '.join(FORMATS)})")

        names = None
        if labelmap is not None and format in ("list", "lmdb"):
            names = labelmap_names(labelmap)
        return open_dataset(dataset, format, split or EVAL_SPLITS.get(format), labelmap=names,
                            allow_outside=allow_outside, images=images, annotations=annotations)
    return dataset


def dataset_classes(dataset, labelmap, models: Sequence, where="the dataset") -> List[str]:
    classes = list(getattr(dataset, "classes", ()) or ())
    if classes:
        return [c for c in classes if c != "background"]
    if labelmap is not None:
        return [n for k, n in sorted(labelmap_names(labelmap).items()) if k != 0]
    for detector in models:
        if detector.labels:
            return [n for k, n in sorted(detector.labels.items()) if k != 0]
    raise FormatError(where, "the dataset does not name its classes and the model has no labels: give --labelmap")


class _Scorer:
    """Per-model accumulation for one metric."""

    def __init__(self, metric: str, classes: Sequence[str], iou: float, dataset, work_dir: Optional[Path]):
        self.metric = metric
        self.classes = classes
        if metric in ("voc07", "voc12", "integral"):
            self.voc = VocAccumulator(classes, iou, metric)
        elif metric == "coco":
            annotation = getattr(dataset, "annotation_file", None) if hasattr(dataset, "label_ids") and \
                dataset.label_ids() else None
            category_ids = dataset.label_ids() if annotation is not None else None
            self.coco = CocoAccumulator(classes, category_ids, annotation)
            self.coco_ids = []
        elif metric == "wider":
            self.wider: Dict[tuple, np.ndarray] = {}
        else:
            raise CaffessdError(f"unknown metric {metric!r} (one of {', '.join(METRICS)})")

    def add(self, record, index: int, detections) -> None:
        if self.metric == "coco":
            self.coco.add_image(record, index, detections)
            self.coco_ids.append(self.coco.image_id(record, index))
        elif self.metric == "wider":
            rows = [(x0, y0, x1 - x0, y1 - y0, score) for _, score, (x0, y0, x1, y1) in detections]
            self.wider[key_for(record.name)] = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
        else:
            gt = [(o.label, o.box, o.difficult or o.ignore) for o in record.objects]
            self.voc.add_image(detections, gt, where=str(record.annotation or record.name))


def evaluate(model, dataset, metric: str = "voc07", **options) -> EvalResult:
    """Evaluate one model (Detector, exported file or (prototxt, caffemodel)) on a
    dataset (a path with `format=`, a reader, or any iterable of ImageRecord).
    Options as `evaluate_models`."""
    return evaluate_models([model], dataset, metric, **options)[0]


def evaluate_models(models: Sequence, dataset, metric: str = "voc07", *, format: Optional[str] = None,
                    split: Optional[str] = None, labelmap=None, iou: float = 0.5, threshold: float = 0.01,
                    limit: Optional[int] = None, wider_gt=None, work_dir=None, workers: int = 2,
                    threads: Optional[int] = None, progress: bool = True, engine: Optional[str] = None,
                    device: Optional[str] = None, precision: Optional[str] = None,
                    allow_outside: bool = False, images=None, annotations=None) -> List[EvalResult]:
    """Evaluate several models side by side in one pass over the dataset:
    each image is decoded once, preprocessed for each model in the decode
    pool, and run through each model in turn. `engine`, `device` and
    `precision` choose the runtime of every model given as a file or a
    Caffe pair (caffessd.inference.detector.Detector)."""
    if metric not in METRICS:
        raise CaffessdError(f"unknown metric {metric!r} (one of {', '.join(METRICS)})")
    labelmap = Path(labelmap) if labelmap is not None else None
    reader = open_eval_dataset(dataset, format, split, labelmap, allow_outside, images, annotations)
    where = dataset if isinstance(dataset, (str, Path)) else "the dataset"
    if hasattr(reader, "__len__") and len(reader) == 0:
        raise CaffessdError(f"{where}: no images to evaluate")
    loaded = [load_detector(m, threshold, threads, engine, device, precision) for m in models]
    detectors = [d for d, _ in loaded]
    classes = dataset_classes(reader, labelmap, detectors, where)
    if metric == "wider" and classes != ["face"]:
        raise CaffessdError(f"the wider metric needs a face dataset (one class 'face'), this one has {classes[:5]}")
    names = model_names([source for _, source in loaded])
    runs: List[LoadedModel] = []
    for (detector, source), name, model in zip(loaded, names, models):
        num_classes = model_num_classes(model, detector)
        runs.append(LoadedModel(name, detector, name_labels(detector, classes, labelmap, num_classes, name), source))
    wider_truth = _wider_truth(reader, wider_gt, split) if metric == "wider" else None
    scorers = [_Scorer(metric, classes, iou, reader, work_dir) for _ in runs]

    total = len(reader) if hasattr(reader, "__len__") else None
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    records: Iterable = itertools.islice(iter(reader), limit) if limit is not None else iter(reader)
    load = getattr(reader, "load_image", None)
    detectors = [run.detector for run in runs]
    for detector in detectors:  # the decoding pool runs beside inference
        detector.engine.set_workload(workload_for(workers))

    def prepare(record):
        # Runs in the decode pool: the image lives only until its blobs exist.
        image = load(record) if load is not None else _load_image(record)
        height, width = image.shape[:2]
        return record, [detector.prepare(image) for detector in detectors], width, height

    count, start = 0, time.perf_counter()
    prepared = ordered_map(prepare, records, workers=workers)
    with closing(prepared), Progress(total, "evaluating", unit="img", enabled=progress) as bar:
        for index, (record, blobs, width, height) in enumerate(prepared):
            for run, scorer, blob in zip(runs, scorers, blobs):
                rows = run.detector.run_blob(blob)
                scorer.add(record, index, _named(run, rows, width, height, record))
            count += 1
            bar.update()
    seconds = time.perf_counter() - start
    if count == 0:
        raise CaffessdError(f"{where}: no images to evaluate")
    return [_finish(run, scorer, metric, count, seconds, wider_truth, work_dir) for run, scorer in zip(runs, scorers)]


def _load_image(record) -> np.ndarray:
    return load_image(record.path)


def _named(run: LoadedModel, rows: np.ndarray, width: int, height: int, record):
    """(class name, score, pixel box) for each detection above the threshold."""
    out = []
    for det in run.detector.to_detections(rows, width, height):
        name = run.label_names.get(det.label)
        if name is None:
            raise CaffessdError(f"{run.name}: a detection on {record.name} has label {det.label}, which is not "
                                f"among the dataset's classes (check --labelmap)")
        out.append((name, det.score, det.box))
    return out


def _wider_truth(reader, wider_gt, split):
    root = Path(getattr(reader, "root", "."))
    return load_ground_truth(find_ground_truth_dir(root, Path(wider_gt) if wider_gt else None, split or "val"),
                             split or "val")


def _finish(run: LoadedModel, scorer: _Scorer, metric: str, count: int, seconds: float, wider_truth,
            work_dir) -> EvalResult:
    base = dict(model=run.name, source=run.source, metric=metric, images=count, seconds=seconds,
                engine=run.detector.engine.label())
    if metric == "coco":
        import tempfile
        if work_dir is None:
            with tempfile.TemporaryDirectory() as tmp:
                stats = scorer.coco.evaluate(Path(tmp), scorer.coco_ids)
        else:
            folder = Path(work_dir) / run.name
            folder.mkdir(parents=True, exist_ok=True)
            stats = scorer.coco.evaluate(folder, scorer.coco_ids)
        per_class = {name: {"AP": ap} for name, ap in stats.pop("per_class").items()}
        curves = stats.pop("curves")
        stats.pop("detections", None)
        return EvalResult(**base, summary=stats, per_class=per_class, curves=curves)
    if metric == "wider":
        evaluated = [image for image in wider_truth if (image.event, image.name) in scorer.wider]
        unknown = [key for key in scorer.wider if key not in {(i.event, i.name) for i in wider_truth}]
        if unknown:
            raise CaffessdError(f"image {unknown[0][0]}/{unknown[0][1]} is not in the WIDER ground-truth .mat files")
        result = wider_evaluate(scorer.wider, evaluated)
        if work_dir is not None:
            write_results(Path(work_dir) / run.name / "wider_results", scorer.wider)
        return EvalResult(**base, summary=dict(result.ap), curves=result.curves)
    result = scorer.voc.result()
    per_class = {c.name: {"AP": c.ap, "ground_truth": c.num_positive, "detections": c.num_detections}
                 for c in result.classes}
    curves = {c.name: {"precision": c.precision, "recall": c.recall} for c in result.classes if c.recall}
    return EvalResult(**base, summary={"mAP": result.mean_ap}, per_class=per_class, curves=curves)
