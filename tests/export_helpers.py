"""Shared pieces of the ncnn and TFLite export tests: the generated nets with
random weights, the onnxruntime reference, and the comparison of detections.

The nets are gen-model's MobileNet-SSD 300, MobileNetV2-SSDLite 300 and
MobileNetV2-SSD 640 with chosen feature layers, with filler weights and
random BatchNorm statistics (running sums with a scale factor of 2, so the
exporters must divide). Their class convolutions are rescaled on the first
face photo so that the scores spread like a trained net's rather than
sitting at 1/21 (softmax) or 0.5 (sigmoid): class logits with a spread of
CONF_SPREAD, sigmoid logits shifted so that about 0.5 % of them pass the
threshold; box offsets are scaled down to stay near their priors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from caffessd import protoio
from caffessd.generators import SSDConfig, build_net, init_weights
from caffessd.netprep import with_preprocessing

MEAN, SCALE = 127.5, 0.007843
FEATURES_640 = ["conv_13/expand", "Conv_1", "layer_19_2_2", "layer_19_2_3", "layer_19_2_4"]
NETS = {   # name: gen-model options
    "mobilenet-ssd-300": dict(backbone="mnv1", head="ssd", input_width=300, input_height=300, num_classes=21),
    "mnv2-ssdlite-300": dict(backbone="mnv2", head="ssdlite", input_width=300, input_height=300, num_classes=21,
                             relu6=True),
    "mnv2-ssd-640": dict(backbone="mnv2", head="ssd", input_width=640, input_height=640, num_classes=3, relu6=True,
                         feature_layers=FEATURES_640),
}
CONF_SPREAD, SIGMOID_PASS, LOC_SCALE = 2.0, 0.5, 0.3


def random_bn_statistics(weights, rng):
    """BatchNorm blobs as Caffe stores them after training: running sums and a factor of 2."""
    out = dict(weights)
    for name, arrays in weights.items():
        if len(arrays) == 3 and arrays[2].size == 1 and arrays[0].ndim == 1:
            c = arrays[0].size
            out[name] = [rng.normal(0, 0.2, c).astype(np.float32) * 2, rng.uniform(1.0, 4.0, c).astype(np.float32) * 2,
                         np.array([2.0], np.float32)]
    return out


def build_export_net(folder: Path, name: str, seed: int = 1, **overrides):
    """deploy.prototxt (with gen-model's preprocessing note) and a random
    caffemodel for NETS[name] in `folder`; returns (prototxt, caffemodel, config)."""
    from caffessd import onnxconv
    from caffessd.inference.session import run_onnx
    from caffessd.net import Net
    from conftest import FACE_PHOTOS

    config = SSDConfig(**{**NETS[name], **overrides})
    deploy = build_net(config, "deploy")
    weights = random_bn_statistics(protoio.layer_blobs(init_weights(deploy, seed=seed)), np.random.default_rng(seed))
    blob = photo_blob(FACE_PHOTOS[0], config.input_width, config.input_height, MEAN, SCALE)
    logits = run_onnx(onnxconv.to_onnx(Net(deploy, weights), raw=True, extra_outputs=["mbox_conf"]),
                               {"data": blob})["mbox_conf"]
    factor, shift = CONF_SPREAD / float(logits.std()), 0.0
    detection = next(layer for layer in deploy.layer if layer.type == "DetectionOutput").detection_output_param
    if any(layer.type == "Sigmoid" for layer in deploy.layer):
        threshold = detection.confidence_threshold
        shift = np.log(threshold / (1 - threshold)) - np.percentile(logits * factor, 100 - SIGMOID_PASS)
    for layer, arrays in weights.items():
        if layer.endswith("mbox_conf"):
            weights[layer] = [arrays[0] * factor, arrays[1] * factor + shift]
        elif layer.endswith("mbox_loc"):
            weights[layer] = [a * LOC_SCALE for a in arrays]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prototxt, caffemodel = folder / f"{name}.prototxt", folder / f"{name}.caffemodel"
    prototxt.write_text(with_preprocessing(protoio.prototxt_text(deploy), [MEAN], SCALE))
    protoio.write_caffemodel(protoio.caffemodel_from(deploy, weights), caffemodel)
    return prototxt, caffemodel, config


def photo_blob(path, width: int, height: int, mean=0.0, scale=1.0) -> np.ndarray:
    from caffessd.image.preprocess import Preprocessing, load_image, make_blob

    return make_blob(load_image(path), Preprocessing(width, height, (float(mean),) * 3, float(scale)))


def onnx_outputs(prototxt, caffemodel, blob, names=("mbox_loc", "mbox_conf_flatten", "mbox_priorbox")):
    """onnxruntime on caffessd's ONNX conversion: detection_out and the named blobs."""
    from caffessd import onnxconv
    from caffessd.inference.session import run_onnx
    from caffessd.net import Net

    model = onnxconv.to_onnx(Net.load(prototxt, caffemodel), extra_outputs=list(names))
    return run_onnx(model, {"data": blob})


def assert_close(ours, theirs, name: str, rtol: float = 1e-4) -> float:
    """Within rtol of the blob's own magnitude (its largest |value|, at least 1e-3)."""
    ours, theirs = np.asarray(ours, np.float64).reshape(-1), np.asarray(theirs, np.float64).reshape(-1)
    assert ours.size == theirs.size, f"{name}: {ours.size} values vs {theirs.size}"
    scale = max(float(np.abs(theirs).max()), 1e-3)
    worst = float(np.abs(ours - theirs).max()) / scale
    assert worst <= rtol, f"{name}: max difference {worst:.2e} of the blob's magnitude > {rtol:.0e}"
    return worst


def scored_rows(rows) -> np.ndarray:
    """DetectionOutput rows [K, 7] with a score (padding rows dropped), best first."""
    rows = np.asarray(rows, np.float32).reshape(-1, 7)
    rows = rows[(rows[:, 2] > 0) & (rows[:, 1] >= 0)]
    return rows[np.argsort(-rows[:, 2], kind="stable")]


def match_detections(ours, ref, width: int, height: int, score_tol: float = 1e-3, px: float = 0.5,
                     cut: float = -np.inf, may_miss: Optional[Callable] = None, may_add: Optional[Callable] = None):
    """Compare two detection lists (rows image, label, score, x0, y0, x1, y1,
    boxes normalised). Every row must have a partner in the other list with
    the same label, a score within `score_tol` and corners within `px`
    pixels, except:
    - rows scoring within `score_tol` of `cut` (a list cut at keep_top_k or a
      threshold: a near-tie may fall on either side of it);
    - near-ties swapped by NMS: two overlapping boxes whose scores are within
      `score_tol` can be processed in either order, so each list may keep the
      other one; such unmatched rows must pair up, one in each list, with the
      same label and scores within `score_tol`;
    - reference rows `may_miss(row)` allows to be absent, and rows of ours
      `may_add(row)` allows to be extra (documented semantic differences).
    Returns the number of matched rows."""
    size = np.array([width, height, width, height], np.float64)
    ours, ref = scored_rows(ours), scored_rows(ref)
    used = np.zeros(len(ours), bool)
    unmatched_ref = []
    for row in ref:
        best, best_err = None, None
        for j, other in enumerate(ours):
            if used[j] or other[1] != row[1] or abs(other[2] - row[2]) > score_tol:
                continue
            err = float(np.abs((other[3:7] - row[3:7]) * size).max())
            if err <= px and (best_err is None or err < best_err):
                best, best_err = j, err
        if best is None:
            unmatched_ref.append(row)
        else:
            used[best] = True
    unmatched_ours = [row for j, row in enumerate(ours) if not used[j]]
    near_cut = lambda row: abs(row[2] - cut) <= score_tol  # noqa: E731
    unmatched_ref = [r for r in unmatched_ref if not near_cut(r) and not (may_miss and may_miss(r))]
    unmatched_ours = [r for r in unmatched_ours if not near_cut(r) and not (may_add and may_add(r))]
    remaining = []
    for row in unmatched_ref:   # NMS near-ties: one kept in each list
        partner = next((i for i, o in enumerate(unmatched_ours)
                        if o[1] == row[1] and abs(o[2] - row[2]) <= score_tol), None)
        if partner is None:
            remaining.append(row)
        else:
            unmatched_ours.pop(partner)
    unmatched_ref = remaining
    assert not unmatched_ref, f"{len(unmatched_ref)} reference detection(s) missing, first {unmatched_ref[0]}"
    assert not unmatched_ours, f"{len(unmatched_ours)} extra detection(s), first {unmatched_ours[0]}"
    return int(used.sum())


def detect_json(run, args, tmp: Path, tag: str) -> list:
    """Run `caffessd detect ARGS` in process; its JSON results."""
    out = tmp / f"det-{tag}"
    code, err, _ = run(["detect", *args, "--out", out, "--json", out / "detections.json", "--cache-dir",
                        tmp / "cache"])
    assert code == 0, err
    return json.loads((out / "detections.json").read_text())


def json_rows(entry: dict) -> np.ndarray:
    """One image's detections from detect's JSON as rows (0, label, score, normalised box)."""
    return np.array([[0, d["label"], d["score"], *d["box_normalized"]] for d in entry["detections"]],
                    np.float32).reshape(-1, 7)


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def assert_same_face_rows(engines, photos, width: int, height: int, score_tol: Optional[float] = None) -> None:
    """On each photo, every engine after the first finds as many faces (score
    >= 0.5) as the first, the first of them at IoU >= 0.9 with the first
    engine's (and, with `score_tol`, a score that close): what a reduced-
    precision artifact must keep of its float32 original."""
    for photo in photos:
        blob = photo_blob(photo, width, height)
        results = [engine.run(blob) for engine in engines]
        reference = results[0][results[0][:, 2] >= 0.5]
        assert len(reference) == 1, f"{photo}: the float32 model finds {len(reference)} faces"
        for engine, rows in zip(engines[1:], results[1:]):
            faces = rows[rows[:, 2] >= 0.5]
            assert len(faces) == 1, f"{photo}: {engine.describe()} finds {len(faces)} faces"
            assert iou(faces[0, 3:7], reference[0, 3:7]) >= 0.9, (photo, engine.describe())
            if score_tol is not None:
                assert abs(faces[0, 2] - reference[0, 2]) < score_tol, (photo, engine.describe())


def layer_types(param_text: str) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for line in param_text.splitlines()[2:]:
        kind = line.split()[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts
