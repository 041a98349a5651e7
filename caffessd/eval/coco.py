"""COCO metrics through pycocotools (the reference implementation, not a
rewrite): AP@[.5:.95], AP50, AP75 and AP for small/medium/large objects, from
detections in COCO's results JSON format.

Ground truth is the dataset's own instances JSON when it has one (a COCO
dataset), otherwise one built from the records (any format), so every dataset
can be scored the COCO way."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from caffessd.errors import CaffessdError, FormatError

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class CocoAccumulator:
    """Collects detections as COCO result entries and, for datasets that are
    not COCO, the ground truth too (a few numbers per box)."""

    def __init__(self, classes: Sequence[str], category_ids: Optional[Dict[str, int]] = None,
                 annotation_file: Optional[Path] = None):
        self.classes = list(classes)
        # COCO category ids: the dataset's own (COCO's 1..90 with gaps) or 1..N.
        self.category_ids = dict(category_ids) if category_ids else {n: i + 1 for i, n in enumerate(self.classes)}
        self.annotation_file = annotation_file
        self.results: List[dict] = []
        self.images: List[dict] = []
        self.annotations: List[dict] = []

    def image_id(self, record, index: int):
        return record.image_id if self.annotation_file is not None and record.image_id is not None else index + 1

    def add_image(self, record, index: int, detections) -> None:
        """`detections`: (class name, score, (xmin, ymin, xmax, ymax) in pixels)."""
        image_id = self.image_id(record, index)
        for name, score, box in detections:
            if name not in self.category_ids:
                raise CaffessdError(f"{record.name}: a detection has class {name!r}, which is not in the dataset's classes")
            x0, y0, x1, y1 = (float(v) for v in box)
            self.results.append({"image_id": image_id, "category_id": self.category_ids[name],
                                 "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                                 "score": round(float(score), 5)})
        if self.annotation_file is None:
            self.images.append({"id": image_id, "file_name": record.name, "width": record.width, "height": record.height})
            for obj in record.objects:
                if obj.label not in self.category_ids:
                    raise FormatError(record.annotation or record.name,
                                      f"ground truth has class {obj.label!r}, which is not in the labelmap")
                x0, y0, x1, y1 = obj.box
                self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id,
                                         "category_id": self.category_ids[obj.label],
                                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                         "iscrowd": int(obj.ignore or obj.difficult)})

    def ground_truth(self) -> dict:
        return {"images": self.images, "annotations": self.annotations,
                "categories": [{"id": cid, "name": name} for name, cid in self.category_ids.items()]}

    def evaluate(self, work_dir: Path, image_ids=None) -> dict:
        """Write the results (and built ground truth) JSON under `work_dir` and score them."""
        results_path = Path(work_dir) / "coco_results.json"
        results_path.write_text(json.dumps(self.results))
        if self.annotation_file is not None:
            gt_path = self.annotation_file
        else:
            gt_path = Path(work_dir) / "coco_ground_truth.json"
            gt_path.write_text(json.dumps(self.ground_truth()))
        ids = image_ids if image_ids is not None else None
        return coco_evaluate(gt_path, results_path, ids)


def coco_evaluate(ground_truth_json, results_json, image_ids=None) -> dict:
    """pycocotools' bbox evaluation of `results_json` against `ground_truth_json`.

    `image_ids` limits it to the images evaluated (e.g. with --limit).
    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class": {name: AP}}."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):   # pycocotools prints its progress
        try:
            gt = COCO(str(ground_truth_json))
        except Exception as exc:
            raise FormatError(ground_truth_json, f"pycocotools cannot read it: {exc}") from None
        results = json.loads(Path(results_json).read_text())
        if not results:
            return {**{key: 0.0 for key in SUMMARY_KEYS}, "per_class": {}, "detections": 0}
        try:
            dt = gt.loadRes(str(results_json))
        except Exception as exc:
            raise FormatError(results_json, f"pycocotools rejects the results: {exc}") from None
        evaluator = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = dict(zip(SUMMARY_KEYS, (float(v) for v in evaluator.stats[:6])))
    # precision[T, R, K, A, M]: IoU thresholds x recall points x classes x areas x maxDets
    precision = evaluator.eval["precision"]
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class[gt.cats[cat_id]["name"]] = float(values.mean()) if values.size else -1.0
    recall_points = evaluator.params.recThrs
    curves = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        curve = precision[0, :, k, 0, -1]         # IoU 0.5: the PR curve people plot
        if (curve > -1).any():
            curves[gt.cats[cat_id]["name"]] = {"recall": [float(r) for r in recall_points],
                                               "precision": [float(max(p, 0.0)) for p in curve]}
    return {**stats, "per_class": per_class, "curves": curves, "detections": len(results)}
