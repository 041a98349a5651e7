"""VOC AP as the SSD fork computes it (DetectionEvaluate + ComputeAP), checked
on hand-computed cases and, on a generated dataset of a few hundred boxes,
against a plain second implementation of the VOC devkit algorithm written
here (global sort by score, per-image greedy matching, difficult ignored).
Tolerance 1e-9 (both in float64)."""
import numpy as np
import pytest

from caffessd.errors import CaffessdError
from caffessd.eval.matching import iou_matrix, match_class
from caffessd.eval.voc import VocAccumulator, average_precision, voc_evaluate

CLASSES = ["cat", "dog", "bird"]


def test_iou_has_no_plus_one():
    assert iou_matrix([[0, 0, 2, 2]], [[1, 1, 3, 3]])[0, 0] == pytest.approx(1 / 7)
    assert iou_matrix([[0, 0, 1, 1]], [[1, 0, 2, 1]])[0, 0] == 0.0   # touching edges
    assert iou_matrix([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 0.0   # empty boxes


def test_non_finite_boxes_overlap_nothing_quietly():
    """An untrained net decodes infinite boxes: union inf -> IoU 0, as the fork's
    JaccardOverlap gives; NaN sizes -> 0 too. No RuntimeWarning either way."""
    import warnings

    inf, nan = np.inf, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        overlaps = iou_matrix([[-inf, -inf, inf, inf], [-inf, 0, inf, 0], [nan, 0, 1, 1], [0, 0, 1, 1]],
                              [[0.2, 0.2, 0.6, 0.6]])
    assert overlaps[:, 0].tolist() == [0.0, 0.0, 0.0, pytest.approx(0.16)]


def test_duplicates_are_false_positives_and_best_box_wins():
    gt = [[0, 0, 10, 10], [20, 0, 30, 10]]
    dets = [[0, 0, 10, 10], [1, 0, 10, 10], [21, 0, 30, 10], [50, 50, 60, 60]]
    scores, tp = match_class(dets, [0.9, 0.8, 0.7, 0.95], gt, [False, False])
    assert scores.tolist() == [0.95, 0.9, 0.8, 0.7]
    assert tp.tolist() == [False, True, False, True]   # no overlap, match, duplicate, match


def test_difficult_neither_counts_nor_penalises():
    acc = VocAccumulator(["cat"])
    acc.add_image([("cat", 0.9, (0, 0, 10, 10)), ("cat", 0.8, (20, 0, 30, 10))],
                  [("cat", (0, 0, 10, 10), True), ("cat", (20, 0, 30, 10), False)])
    scores, positive = acc.class_arrays("cat")
    assert acc.num_positive["cat"] == 1
    assert scores.tolist() == pytest.approx([0.8]) and positive.tolist() == [True]
    assert acc.result().mean_ap == pytest.approx(1.0)


def test_ties_keep_input_order():
    # Two equal scores: FP first then TP (image order) -> precision 0 then 1/2.
    acc = VocAccumulator(["cat"], ap_version="integral")
    acc.add_image([("cat", 0.5, (50, 50, 60, 60))], [("cat", (0, 0, 10, 10), False)])
    acc.add_image([("cat", 0.5, (0, 0, 10, 10))], [("cat", (0, 0, 10, 10), False)])
    # recall 0 -> 0.5 at precision 1/2: Integral = 0.25
    assert acc.result().classes[0].ap == pytest.approx(0.25)


def test_11point_maxintegral_integral_hand_computed():
    # Ranked TP, FP, TP, FP, TP with 4 ground-truth boxes.
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    positive = [1, 0, 1, 0, 1]
    # precision 1, 1/2, 2/3, 1/2, 3/5 at recall .25, .25, .5, .5, .75
    integral = 0.25 * 1 + 0.25 * (2 / 3) + 0.25 * 0.6
    max_integral = 0.25 * 1 + 0.25 * (2 / 3) + 0.25 * 0.6
    # 11 point: t=0..0.2 -> 1, t=0.3..0.5 -> 2/3, t=0.6,0.7 -> 0.6, t=0.8..1 -> 0
    eleven = (3 * 1 + 3 * (2 / 3) + 2 * 0.6) / 11
    assert average_precision(scores, positive, 4, "integral") == pytest.approx(integral)
    assert average_precision(scores, positive, 4, "voc12") == pytest.approx(max_integral)
    assert average_precision(scores, positive, 4, "voc07") == pytest.approx(eleven)
    # A later precision rise lifts MaxIntegral but not Integral: TP, FP, FP, TP, TP with 3 boxes.
    p = [1, 0, 0, 1, 1]
    assert average_precision(scores, p, 3, "integral") == pytest.approx(1 / 3 + 1 / 3 * 0.5 + 1 / 3 * 0.6)
    assert average_precision(scores, p, 3, "voc12") == pytest.approx(1 / 3 + 2 / 3 * 0.6)


def test_class_without_ground_truth_counts_zero_in_map():
    result = voc_evaluate({"a": [("cat", 0.9, (0, 0, 10, 10)), ("bird", 0.9, (0, 0, 5, 5))]},
                          {"a": [("cat", (0, 0, 10, 10), False)]}, CLASSES)
    aps = {c.name: c.ap for c in result.classes}
    assert aps == {"cat": 1.0, "dog": 0.0, "bird": 0.0}
    assert result.mean_ap == pytest.approx(1 / 3)   # the fork divides by every foreground class


def test_unknown_classes_and_images_are_errors():
    with pytest.raises(CaffessdError, match="'horse', which is not in the labelmap"):
        voc_evaluate({"a": [("horse", 0.9, (0, 0, 1, 1))]}, {"a": []}, CLASSES)
    with pytest.raises(CaffessdError, match="'b', which has no ground-truth entry"):
        voc_evaluate({"b": []}, {"a": []}, CLASSES)


# --- the plain VOC devkit algorithm, written independently --------------------------------------

def devkit_ap(class_name, detections, ground_truth, iou=0.5, use_07=True):
    records = {image: [(box, diff) for name, box, diff in objs if name == class_name]
               for image, objs in ground_truth.items()}
    npos = sum(1 for objs in records.values() for _, diff in objs if not diff)
    dets = [(score, image, box) for image, objs in detections.items()
            for name, score, box in objs if name == class_name]
    dets.sort(key=lambda d: -d[0])
    used = {image: [False] * len(objs) for image, objs in records.items()}
    tp, fp = [], []
    for score, image, box in dets:
        best, best_j = -1.0, -1
        for j, (gbox, _) in enumerate(records[image]):
            iw = min(box[2], gbox[2]) - max(box[0], gbox[0])
            ih = min(box[3], gbox[3]) - max(box[1], gbox[1])
            if iw <= 0 or ih <= 0:
                ov = 0.0
            else:
                inter = iw * ih
                ov = inter / ((box[2] - box[0]) * (box[3] - box[1]) + (gbox[2] - gbox[0]) * (gbox[3] - gbox[1]) - inter)
            if ov > best:
                best, best_j = ov, j
        if best >= iou:
            if records[image][best_j][1]:
                continue
            if not used[image][best_j]:
                used[image][best_j] = True
                tp.append(1); fp.append(0)
            else:
                tp.append(0); fp.append(1)
        else:
            tp.append(0); fp.append(1)
    if not tp or npos == 0:
        return 0.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec, prec = tp / npos, tp / (tp + fp)
    if use_07:
        return sum((prec[rec >= t].max() if (rec >= t).any() else 0.0) for t in np.arange(0, 1.1, 0.1)) / 11
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def generated_dataset(seed=0, images=60):
    rng = np.random.default_rng(seed)
    ground_truth, detections = {}, {}
    for k in range(images):
        objs, dets = [], []
        for _ in range(rng.integers(0, 6)):
            name = CLASSES[rng.integers(0, len(CLASSES))]
            x, y = rng.uniform(0, 400, 2)
            w, h = rng.uniform(10, 120, 2)
            box = (x, y, x + w, y + h)
            objs.append((name, box, bool(rng.random() < 0.15)))
            for _ in range(rng.integers(0, 3)):   # jittered detections: hits, near misses, duplicates
                jitter = rng.normal(0, 0.25, 4) * np.array([w, h, w, h])
                dets.append((name, float(rng.random()), tuple(np.array(box) + jitter)))
        for _ in range(rng.integers(0, 3)):       # background clutter
            x, y = rng.uniform(0, 400, 2)
            dets.append((CLASSES[rng.integers(0, 3)], float(rng.random()), (x, y, x + 40, y + 40)))
        ground_truth[f"img{k}"] = objs
        detections[f"img{k}"] = dets
    return detections, ground_truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_dataset_matches_plain_devkit(seed):
    detections, ground_truth = generated_dataset(seed)
    boxes = sum(len(v) for v in ground_truth.values()) + sum(len(v) for v in detections.values())
    assert boxes > 300
    for version, use_07 in (("voc07", True), ("voc12", False)):
        result = voc_evaluate(detections, ground_truth, CLASSES, ap_version=version)
        expected = [devkit_ap(name, detections, ground_truth, use_07=use_07) for name in CLASSES]
        got = [c.ap for c in result.classes]
        assert got == pytest.approx(expected, abs=1e-9)
        assert 0.05 < result.mean_ap < 0.95   # a non-trivial case
