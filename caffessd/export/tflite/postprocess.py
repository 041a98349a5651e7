"""Caffe's DetectionOutput as TFLite's TFLite_Detection_PostProcess custom op.

The op (tensorflow/lite/kernels/detection_postprocess.cc) takes
- box encodings [1, P, 4] in (y, x, h, w) order,
- class scores [1, P, C] after the net's softmax/sigmoid, background first,
- anchors [P, 4] as (y centre, x centre, height, width),
and decodes y = ty / y_scale * anchor_h + anchor_y, h = exp(th / h_scale) *
anchor_h (x and w alike). Caffe's CENTER_SIZE decoding is the same with
the prior's variance in place of 1 / scale: cx = var0 * tx * prior_w +
prior_cx, w = exp(var2 * tw) * prior_w. So the anchors are Caffe's priors in
centre-size form, the scales are 1 / variance when every prior has the same
variances (Caffe's usual 0.1, 0.1, 0.2, 0.2 give TF's 10, 10, 5, 5), and
otherwise the per-prior variances multiply the encodings in the graph
(scales 1). Caffe's (x, y, w, h) encodings are reordered to (y, x, h, w).

Its outputs are boxes [1, N, 4] (ymin, xmin, ymax, xmax, normalised),
classes [1, N] (0-based without the background: Caffe's label - 1), scores
[1, N] and the count [1]; rows past the count are zero.

Regular NMS (use_regular_nms, caffessd's default) is per class, as
Caffe's: scores >= nms_score_threshold (Caffe: >), greedy NMS at IoU >
nms_iou_threshold, then the max_detections best of all classes. Where they
differ is the cap per class: Caffe keeps a class's top_k best candidates
*before* NMS and every survivor; the op runs NMS on all candidates and keeps
the first detections_per_class survivors. The survivors among a class's
top_k best candidates are the same in both (greedy NMS decides each box
from better ones only), so the two agree on every detection scoring at least
the class's top_k-th best candidate, and below that the op may add survivors
Caffe never considered. caffessd therefore, by default (candidates "caffe"),
zeroes in the graph every score below its class's top_k-th best (one TopK
over the priors per class, before the op): the op then sees Caffe's
candidates and returns Caffe's detections (ties at the top_k-th score are
all kept, where Caffe keeps top_k of them in sort order). Candidates "all"
leaves that out: the op's own semantics, one op less (as TF's exported
detectors have it). Fast NMS (--nms fast) is class-agnostic: one NMS over
each prior's best class (TF's mobile examples' default); it differs from
Caffe for nets with several classes whose boxes overlap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from caffessd.errors import UnsupportedLayerError

OP_NAME = "TFLite_Detection_PostProcess"
FLT_MAX = float(np.finfo(np.float32).max)
NMS_MODES = ("regular", "fast")
CANDIDATES = ("caffe", "all")


@dataclass
class PostProcess:
    """The op's attributes and the constants the graph feeds it."""

    attributes: Dict[str, object]
    anchors: np.ndarray                 # [P, 4] y, x, h, w
    encoding_scale: Optional[np.ndarray]  # [P, 4] per-prior variances in (y, x, h, w) order, or None
    candidates_per_class: Optional[int] = None  # Caffe's pre-NMS top_k, applied in the graph (None: not needed)

    def implements_signature(self) -> str:
        """The `experimental_implements` text the TFLite converter turns into the custom op."""
        parts = [f'name: "{OP_NAME}"']
        for key, value in self.attributes.items():
            if isinstance(value, bool):
                text = f"b: {str(value).lower()}"
            elif isinstance(value, int):
                text = f"i: {value}"
            else:
                text = f"f: {float(np.float32(value))!r}"
            parts.append(f'attr {{ key: "{key}" value {{ {text} }} }}')
        return " ".join(parts)


def _refuse(layer, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(layer.name, layer.type, f"expressible as {OP_NAME}: {why}")


def check_settings(layer, settings: dict) -> None:
    """Refuse what the op cannot do, naming the layer."""
    nms = layer.detection_output_param.nms_param
    checks = [
        (nms.HasField("eta") and nms.eta != 1, f"adaptive NMS (eta {nms.eta})"),
        (not settings["share_location"], "share_location: false (one box per class)"),
        (settings["code_type"] != "CENTER_SIZE", f"code_type {settings['code_type']} (the op decodes centre-size "
                                                 "encodings)"),
        (settings["background_label_id"] != 0, f"background_label_id {settings['background_label_id']} "
                                               "(the op takes the first class as the background)"),
        (settings["clip_before_nms"] or settings["clip_after_nms"], "clipped boxes (the TensorFlow "
                                                                    "post-processing in the net's caffessd note)"),
        (not 0 < settings["nms_threshold"] <= 1, f"nms_threshold {settings['nms_threshold']} (the op needs "
                                                 "0 < IoU threshold <= 1)"),
        (settings["num_classes"] < 2, f"num_classes {settings['num_classes']}"),
    ]
    for failed, why in checks:
        if failed:
            raise _refuse(layer, why)


def anchors_and_scales(priors: np.ndarray, encoded: bool) -> Tuple[np.ndarray, Dict[str, float], Optional[np.ndarray]]:
    """Caffe's (1, 2, P*4) priors -> (anchors [P, 4] y, x, h, w; the four
    scales; per-prior encoding multipliers or None)."""
    planes = np.asarray(priors, np.float64).reshape(2, -1, 4)
    boxes, variances = planes[0], planes[1]
    anchors = np.stack([(boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2,
                        boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1).astype(np.float32)
    if encoded:
        return anchors, dict(y_scale=1.0, x_scale=1.0, h_scale=1.0, w_scale=1.0), None
    yxhw = variances[:, [1, 0, 3, 2]]
    if np.all(yxhw == yxhw[0]) and np.all(yxhw[0] > 0):
        y, x, h, w = (1.0 / float(v) for v in yxhw[0])
        return anchors, dict(y_scale=y, x_scale=x, h_scale=h, w_scale=w), None
    return anchors, dict(y_scale=1.0, x_scale=1.0, h_scale=1.0, w_scale=1.0), yxhw.astype(np.float32)


def post_process(layer, settings: dict, priors: np.ndarray, nms: str = "regular",
                 candidates: str = "caffe") -> PostProcess:
    """The op for DetectionOutput `layer` with resolved `settings`
    (caffessd.onnxconv.ssd.detection_settings) and its constant priors."""
    check_settings(layer, settings)
    classes = int(settings["num_classes"])
    count = int(np.asarray(priors).size // 8)
    anchors, scales, multiplier = anchors_and_scales(priors, settings["variance_encoded_in_target"])
    per_class = settings["max_per_class"] if settings["max_per_class"] > 0 else settings["top_k"]
    per_class = int(per_class) if per_class > 0 else count
    keep = int(settings["keep_top_k"]) if settings["keep_top_k"] > 0 else per_class * (classes - 1)
    threshold = settings["confidence_threshold"]
    attributes = {
        "max_detections": keep,
        "max_classes_per_detection": 1,
        "detections_per_class": per_class,
        "use_regular_nms": nms == "regular",
        "nms_score_threshold": -FLT_MAX if threshold is None else float(threshold),
        "nms_iou_threshold": float(settings["nms_threshold"]),
        **scales,
        "num_classes": classes - 1,
    }
    top_k = int(settings["top_k"])
    prefilter = (candidates == "caffe" and settings["max_per_class"] <= 0
                 and threshold is not None and threshold > 0 and 0 < top_k < count)
    return PostProcess(attributes, anchors, multiplier, top_k if prefilter else None)
