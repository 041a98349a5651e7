"""SSD's PriorBox and DetectionOutput as ncnn's own layers.

PriorBox: ncnn computes the priors at run time from the feature map and the
image (src/layer/priorbox.cpp) with Caffe's formulas, in Caffe's order (per
min size: the min box, the sqrt(min * max) box, then each aspect ratio). It
does not drop duplicate ratios as Caffe does, so the exporter writes Caffe's
already expanded ratio list (1 left out, each 1/r already present) with
flip 0. Its output is ncnn's 2 x (4 * priors) blob: boxes, then variances,
Caffe's (1, 2, 4 * priors) without the batch.

DetectionOutput: ncnn's layer (src/layer/detectionoutput.cpp) is Caffe's for
CENTER_SIZE codes with variances read from the priors, shared locations and
background class 0: per class the `top_k` best scores above the threshold,
greedy NMS at `nms_threshold` (IoU without +1, as Caffe's normalised boxes),
then the `keep_top_k` best of all classes. Its rows are (label, score, xmin,
ymin, xmax, ymax), best first, and an image without detections gives an
empty blob. One difference is guarded: ncnn skips a prior outright when its
background score is at least 1 - confidence_threshold, which is only
harmless for softmax scores; the exporter therefore zeroes the background
column first (Slice, Power with scale 0, Concat), which ncnn never scores
anyway, so the result is Caffe's for softmax and sigmoid heads alike.
Settings ncnn cannot express are refused by name.
"""
from __future__ import annotations

import numpy as np

from caffessd.export.ncnn.registry import refuse, writer
from caffessd.layers import prior_aspect_ratios
from caffessd.onnxconv.ssd import detection_settings
from caffessd.priorbox import variances

AUTO = -233          # ncnn: derive from the blobs
FLT_MAX = float(np.finfo(np.float32).max)


@writer("PriorBox")
def prior_box(graph, info):
    param = info.layer.prior_box_param
    ratios = [r for r in prior_aspect_ratios(param) if abs(r - 1.0) >= 1e-6]
    if param.max_size and len(param.max_size) != len(param.min_size):
        raise refuse(info, "ncnn pairs every min_size with a max_size")
    params = {0: [float(v) for v in param.min_size], 1: [float(v) for v in param.max_size],
              2: [float(r) for r in ratios], 7: 0, 8: int(param.clip), 9: AUTO, 10: AUTO,
              13: float(param.offset)}   # ncnn's image size defaults to 0, not "from the image": always written
    params.update(zip((3, 4, 5, 6), (float(v) for v in variances(param))))
    if param.HasField("img_h") or param.HasField("img_w"):
        params[9], params[10] = int(param.img_w), int(param.img_h)
    elif param.HasField("img_size"):
        params[9] = params[10] = int(param.img_size)
    if param.HasField("step_h") or param.HasField("step_w"):
        params[11], params[12] = float(param.step_w), float(param.step_h)
    elif param.HasField("step") and param.step > 0:
        params[11] = params[12] = float(param.step)
    graph.emit(info, "PriorBox", params)


def _settings(info, notes) -> dict:
    layer = info.layer
    param = layer.detection_output_param
    if param.nms_param.HasField("eta") and param.nms_param.eta != 1:
        raise refuse(info, f"adaptive NMS (eta {param.nms_param.eta})")
    settings = detection_settings(layer, notes)
    checks = [
        (not settings["share_location"], "share_location: false (one box per class)"),
        (settings["code_type"] != "CENTER_SIZE", f"code_type {settings['code_type']} (ncnn decodes CENTER_SIZE)"),
        (settings["variance_encoded_in_target"], "variance_encoded_in_target: true"),
        (settings["background_label_id"] != 0, f"background_label_id {settings['background_label_id']} "
                                               "(ncnn's background is class 0)"),
        (settings["clip_before_nms"] or settings["clip_after_nms"] or settings["max_per_class"] != -1,
         "the TensorFlow post-processing recorded in the net's caffessd note (clipping, per-class maxima)"),
    ]
    for failed, why in checks:
        if failed:
            raise refuse(info, why)
    return settings


@writer("DetectionOutput")
def detection_output(graph, info):
    settings = _settings(info, graph.notes)
    layer = info.layer
    classes = int(settings["num_classes"])
    priors = int(info.input_shapes[0][1]) // 4
    if classes < 2:
        raise refuse(info, f"num_classes {classes} (a background and at least one class are needed)")
    if int(np.prod(info.input_shapes[1][1:])) != priors * classes:
        raise refuse(info, f"its scores are not {priors} priors x {classes} classes")
    top_k = settings["top_k"] if settings["top_k"] > 0 else priors
    keep = settings["keep_top_k"] if settings["keep_top_k"] > 0 else priors * max(classes - 1, 1)
    threshold = settings["confidence_threshold"]
    params = {0: classes, 1: float(settings["nms_threshold"]), 2: int(top_k), 3: int(keep),
              4: -FLT_MAX if threshold is None else float(threshold)}
    loc, conf, prior = (graph.bottom(b) for b in layer.bottom[:3])
    conf = _without_background(graph, layer.name, conf, priors, classes)
    top = graph.top(layer.name, layer.top[0], info.output_shapes[0])
    graph.add("DetectionOutput", layer.name, [loc, conf, prior], [top], params)


def _without_background(graph, name: str, conf: str, priors: int, classes: int) -> str:
    """The scores with class 0 set to 0: (P*C) -> (P, C) -> [P,1 | P,C-1] -> 0 * first -> (P*C)."""
    table = graph.internal(f"{name}_scores")
    graph.add("Reshape", f"{name}_scores", [conf], [table], {0: classes, 1: priors})
    background, others = graph.internal(f"{name}_background"), graph.internal(f"{name}_classes")
    graph.add("Slice", f"{name}_split_background", [table], [background, others], {0: [1, classes - 1], 1: 1})
    zero = graph.internal(f"{name}_background_zero")
    graph.add("Power", f"{name}_zero_background", [background], [zero], {0: 1.0, 1: 0.0, 2: 0.0})
    joined = graph.internal(f"{name}_scores_zeroed")
    graph.add("Concat", f"{name}_join_scores", [zero, others], [joined], {0: 1})
    flat = graph.internal(f"{name}_scores_flat")
    graph.add("Flatten", f"{name}_flatten_scores", [joined], [flat])
    return flat
