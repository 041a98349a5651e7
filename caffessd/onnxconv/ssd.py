"""SSD's PriorBox (a constant) and DetectionOutput (decode + per-class NMS).

DetectionOutput reproduces the SSD fork of Caffe (and OpenCV's port of it):
for every class but the background, the `top_k` best-scoring boxes above
`confidence_threshold` go through greedy NMS; then the `keep_top_k` best
detections of an image survive. Rows come out best score first, as OpenCV
4.x emits them (Caffe itself groups the same rows by label).

Nets converted from the TF Object Detection API carry a caffessd note
(caffessd.netnotes) `"postprocessing": {"clip_before_nms": true,
"max_per_class": N, "max_total": M}` with TF's semantics, which Caffe's
schema cannot express: decoded boxes are clipped to the image and those left
with zero area dropped before per-class NMS (TF1 OD API; the TF2 OD API clips
the NMS survivors instead: "clip_after_nms": true), and NMS keeps up to N survivors
per class chosen from *all* candidates above the threshold (nms_param.top_k,
a pre-NMS cap, is then ignored); the M best of all classes are kept.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from caffessd import caffe_pb2
from caffessd.errors import CaffessdError
from caffessd.priorbox import prior_boxes
from caffessd.onnxconv.registry import bottom, emitter

CodeType = caffe_pb2.PriorBoxParameter


@emitter("PriorBox")
def prior_box(ctx, info):
    feature, image = info.input_shapes[0], info.input_shapes[1]
    ctx.bind_const(info.layer, 0, prior_boxes(info.layer.prior_box_param, feature[2:4], image[2:4]))


def detection_settings(layer, notes: Optional[dict] = None) -> dict:
    """DetectionOutput's parameters with Caffe's defaults resolved, and the
    TF post-processing of the net's caffessd notes when it has them."""
    param = layer.detection_output_param
    nms = param.nms_param
    if nms.HasField("eta") and nms.eta != 1:
        raise CaffessdError(f"layer '{layer.name}': adaptive NMS (eta={nms.eta}) is not supported by the ONNX converter")
    settings = {
        "num_classes": int(param.num_classes),
        "share_location": bool(param.share_location),
        "background_label_id": int(param.background_label_id),
        "nms_threshold": float(nms.nms_threshold),
        "top_k": int(nms.top_k) if nms.HasField("top_k") else -1,
        "keep_top_k": int(param.keep_top_k),
        "confidence_threshold": float(param.confidence_threshold) if param.HasField("confidence_threshold") else None,
        "code_type": CodeType.CodeType.Name(param.code_type),
        "variance_encoded_in_target": bool(param.variance_encoded_in_target),
        "clip_before_nms": False,
        "clip_after_nms": False,
        "max_per_class": -1,   # -1: Caffe's semantics (top_k candidates, every survivor)
    }
    settings.update(_tf_postprocessing((notes or {}).get("postprocessing")))
    return settings


def _tf_postprocessing(note) -> dict:
    """The settings a "postprocessing" note overrides, checked."""
    if note is None:
        return {}
    if not isinstance(note, dict):
        raise CaffessdError('caffessd note "postprocessing" must be a JSON object')
    out = {}
    for key in ("clip_before_nms", "clip_after_nms"):
        if key in note:
            if not isinstance(note[key], bool):
                raise CaffessdError(f'caffessd note "postprocessing": {key} must be true or false')
            out[key] = note[key]
    for key, target in (("max_per_class", "max_per_class"), ("max_total", "keep_top_k")):
        if key in note:
            value = note[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CaffessdError(f'caffessd note "postprocessing": {key} must be a positive integer, not {value!r}')
            out[target] = value
    return out


def _decode_constants(priors: np.ndarray, code_type: str, encoded: bool):
    """Per-prior (P, 4) multiplier and offset so that decoding is `loc * A + B`
    (followed, for CENTER_SIZE, by exp on the size part)."""
    planes = priors.reshape(-1, priors.shape[-1])  # Caffe's (1, 2, P*4): boxes, variances
    boxes = planes[0].reshape(-1, 4).astype(np.float32)
    var = planes[1].reshape(-1, 4).astype(np.float32) if len(planes) > 1 else np.ones_like(boxes)
    if encoded:
        var = np.ones_like(var)
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    if code_type == "CENTER_SIZE":
        scale = np.stack([var[:, 0] * width, var[:, 1] * height, var[:, 2], var[:, 3]], axis=1)
        shift = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                          np.zeros_like(width), np.zeros_like(width)], axis=1)
        return scale, shift, np.stack([width, height], axis=1)
    if code_type == "CORNER":
        return var, boxes, None
    if code_type == "CORNER_SIZE":
        return var * np.stack([width, height, width, height], axis=1), boxes, None
    raise CaffessdError(f"DetectionOutput code_type {code_type} is not supported")


@emitter("DetectionOutput")
def detection_output(ctx, info):
    layer = info.layer
    settings = detection_settings(layer, ctx.notes)
    priors = ctx.const_of(layer.bottom[2])
    if priors is None:
        raise CaffessdError(f"layer '{layer.name}': its priors ('{layer.bottom[2]}') must come from PriorBox layers")
    num_priors = priors.shape[-1] // 4
    images = info.input_shapes[0][0]
    loc, conf = bottom(ctx, info, 0), bottom(ctx, info, 1)
    rows = []
    for n in range(images):
        loc_n, conf_n = loc, conf
        if images > 1:
            loc_n = ctx.slice(loc, [n], [n + 1], [0], f"{layer.name}_loc{n}")
            conf_n = ctx.slice(conf, [n], [n + 1], [0], f"{layer.name}_conf{n}")
        rows.append(_image_detections(ctx, layer, settings, loc_n, conf_n, priors, num_priors, n))
    rows = rows[0] if len(rows) == 1 else ctx.node("Concat", rows, f"{layer.name}_rows", axis=0)
    # Nothing found: OpenCV 4.x answers with one all-zero row (score 0).
    padded = ctx.node("Concat", [rows, ctx.initializer(f"{layer.name}_empty", np.zeros((1, 7), np.float32))],
                      f"{layer.name}_padded", axis=0)
    count = ctx.node("Shape", [rows], f"{layer.name}_count", start=0, end=1)
    count = ctx.node("Max", [count, ctx.ints(f"{layer.name}_one", [1])], f"{layer.name}_count1")
    kept = ctx.node("Slice", [padded, ctx.ints(f"{layer.name}_zero", [0]), count], f"{layer.name}_kept")
    ctx.emit_top(layer, "Reshape", [kept, ctx.ints(f"{layer.name}_shape", [1, 1, -1, 7])])


def _decode(ctx, name, loc, priors, settings, locations):
    """Decoded boxes of one image, (locations * P, 4) with rows [xmin, ymin, xmax, ymax]."""
    num_priors = priors.shape[-1] // 4
    scale, shift, size = _decode_constants(priors, settings["code_type"], settings["variance_encoded_in_target"])
    loc = ctx.reshape(loc, [num_priors, locations, 4], f"{name}_loc_pl4")
    if locations > 1:
        loc = ctx.node("Transpose", [loc], f"{name}_loc_lp4", perm=[1, 0, 2])
    else:
        loc = ctx.reshape(loc, [1, num_priors, 4], f"{name}_loc_lp4")
    scaled = ctx.node("Mul", [loc, ctx.initializer(f"{name}_scale", scale)], f"{name}_scaled")
    moved = ctx.node("Add", [scaled, ctx.initializer(f"{name}_shift", shift)], f"{name}_moved")
    if size is not None:
        centre = ctx.slice(moved, [0], [2], [2], f"{name}_centre")
        log_size = ctx.slice(moved, [2], [4], [2], f"{name}_logsize")
        extent = ctx.node("Mul", [ctx.node("Exp", [log_size], f"{name}_exp"),
                                  ctx.initializer(f"{name}_prior_size", size * 0.5)], f"{name}_half")
        moved = ctx.node("Concat", [ctx.node("Sub", [centre, extent], f"{name}_min"),
                                    ctx.node("Add", [centre, extent], f"{name}_max")], f"{name}_boxes", axis=2)
    return ctx.reshape(moved, [locations * num_priors, 4], f"{name}_boxes_flat")


def _image_detections(ctx, layer, settings, loc, conf, priors, num_priors, image):
    """Rows (M, 7) of one image, in Caffe's output order."""
    name = f"{layer.name}_img{image}"
    num_classes = settings["num_classes"]
    classes = [c for c in range(num_classes) if c != settings["background_label_id"]]
    locations = 1 if settings["share_location"] else num_classes
    boxes = _decode(ctx, name, loc, priors, settings, locations)

    # Scores (C', P) of the foreground classes.
    scores = ctx.reshape(conf, [num_priors, num_classes], f"{name}_conf_pc")
    scores = ctx.node("Transpose", [scores], f"{name}_conf_cp", perm=[1, 0])
    scores = ctx.node("Gather", [scores, ctx.ints(f"{name}_classes", classes)], f"{name}_fg", axis=0)

    if settings["clip_before_nms"]:
        boxes, scores = _clip_to_image(ctx, name, boxes, scores, classes, locations, num_priors)
    threshold = settings["confidence_threshold"]
    if threshold is None and settings["clip_before_nms"]:
        threshold = float(np.finfo(np.float32).min)  # only the dropped boxes' -inf stay out

    # Per-class candidates: the top_k best before NMS, as Caffe's GetMaxScoreIndex;
    # with TF's semantics all of them, and NMS keeps up to max_per_class.
    top_k = settings["top_k"]
    per_class = settings["max_per_class"]
    k = num_priors if top_k < 0 or per_class > 0 else min(top_k, num_priors)
    max_out = k if per_class < 0 else min(per_class, k)
    cand_scores, cand_index = ctx.node("TopK", [scores, ctx.ints(f"{name}_k", [k])], f"{name}_cand",
                                       outputs=2, axis=1, largest=1, sorted=1)
    row_of_class = [(0 if locations == 1 else c) * num_priors for c in classes]
    flat_index = ctx.node("Add", [cand_index, ctx.ints(f"{name}_rowbase", np.reshape(row_of_class, (-1, 1)))],
                          f"{name}_cand_rows")
    cand_boxes = ctx.node("Gather", [boxes, flat_index], f"{name}_cand_boxes", axis=0)  # (C', k, 4)

    # NMS with each class as its own batch entry, so boxes can differ per class.
    nms_inputs = [cand_boxes, ctx.reshape(cand_scores, [len(classes), 1, k], f"{name}_nms_scores"),
                  ctx.ints(f"{name}_max_out", [max_out]),
                  ctx.initializer(f"{name}_iou", np.asarray([settings["nms_threshold"]], np.float32))]
    if threshold is not None:
        nms_inputs.append(ctx.initializer(f"{name}_score_thr", np.asarray([threshold], np.float32)))
    selected = ctx.node("NonMaxSuppression", nms_inputs, f"{name}_nms", center_point_box=0)
    sel_class = ctx.node("Squeeze", [ctx.slice(selected, [0], [1], [1], f"{name}_sel_b"), ctx.ints(f"{name}_ax1", [1])],
                         f"{name}_sel_class")
    sel_cand = ctx.node("Squeeze", [ctx.slice(selected, [2], [3], [1], f"{name}_sel_k"), ctx.ints(f"{name}_ax1b", [1])],
                        f"{name}_sel_cand")
    flat = ctx.node("Add", [ctx.node("Mul", [sel_class, ctx.ints(f"{name}_kk", [k])], f"{name}_sel_base"), sel_cand],
                    f"{name}_sel_flat")
    det_scores = ctx.node("Gather", [ctx.reshape(cand_scores, [-1], f"{name}_cand_scores_flat"), flat],
                          f"{name}_det_scores", axis=0)
    det_boxes = ctx.node("Gather", [ctx.reshape(cand_boxes, [-1, 4], f"{name}_cand_boxes_flat"), flat],
                         f"{name}_det_boxes", axis=0)
    label_table = ctx.initializer(f"{name}_labels", np.asarray(classes, np.float32))
    det_labels = ctx.node("Gather", [label_table, sel_class], f"{name}_det_labels", axis=0)
    det_image = ctx.node("Mul", [det_scores, ctx.initializer(f"{name}_zero", np.float32(0))], f"{name}_zeros")
    if image:
        det_image = ctx.node("Add", [det_image, ctx.initializer(f"{name}_id", np.float32(image))], f"{name}_ids")
    columns = [ctx.node("Unsqueeze", [v, ctx.ints(f"{name}_u{i}", [1])], f"{name}_col{i}")
               for i, v in enumerate([det_image, det_labels, det_scores])]
    rows = ctx.node("Concat", columns + [det_boxes], f"{name}_rows", axis=1)
    if settings["clip_after_nms"]:
        rows, det_scores = _clip_survivors(ctx, name, rows, det_scores)
    return _best_first(ctx, name, rows, det_scores, settings["keep_top_k"])


def _clip_to_image(ctx, name, boxes, scores, classes, locations, num_priors):
    """TF's clip_to_window before NMS: boxes clipped to [0, 1], and a box left
    with zero area scores -inf so that NMS never selects it."""
    zero = ctx.initializer(f"{name}_clip_lo", np.float32(0))
    one = ctx.initializer(f"{name}_clip_hi", np.float32(1))
    boxes = ctx.node("Clip", [boxes, zero, one], f"{name}_clipped")
    low = ctx.slice(boxes, [0], [2], [1], f"{name}_clip_min")
    high = ctx.slice(boxes, [2], [4], [1], f"{name}_clip_max")
    extent = ctx.node("Sub", [high, low], f"{name}_clip_extent")  # (N, 2): width, height
    width = ctx.slice(extent, [0], [1], [1], f"{name}_clip_w")
    height = ctx.slice(extent, [1], [2], [1], f"{name}_clip_h")
    area = ctx.node("Mul", [height, width], f"{name}_clip_area")  # TF: (ymax - ymin) * (xmax - xmin)
    kept = ctx.node("Greater", [ctx.reshape(area, [locations, num_priors], f"{name}_clip_area_lp"), zero],
                    f"{name}_clip_kept")
    if locations > 1:
        kept = ctx.node("Gather", [kept, ctx.ints(f"{name}_clip_classes", classes)], f"{name}_clip_kept_fg", axis=0)
    dropped = ctx.initializer(f"{name}_clip_dropped", np.float32(-np.inf))
    scores = ctx.node("Where", [kept, scores, dropped], f"{name}_clip_scores")
    return boxes, scores


def _clip_survivors(ctx, name, rows, det_scores):
    """TF2's clip_to_window after NMS: survivors' boxes clipped to [0, 1], and
    those left with zero area removed (before the max_total cut)."""
    head = ctx.slice(rows, [0], [3], [1], f"{name}_post_head")
    boxes = ctx.node("Clip", [ctx.slice(rows, [3], [7], [1], f"{name}_post_boxes"),
                              ctx.initializer(f"{name}_post_lo", np.float32(0)),
                              ctx.initializer(f"{name}_post_hi", np.float32(1))], f"{name}_post_clipped")
    extent = ctx.node("Sub", [ctx.slice(boxes, [2], [4], [1], f"{name}_post_max"),
                              ctx.slice(boxes, [0], [2], [1], f"{name}_post_min")], f"{name}_post_extent")
    area = ctx.node("Mul", [ctx.slice(extent, [1], [2], [1], f"{name}_post_h"),
                            ctx.slice(extent, [0], [1], [1], f"{name}_post_w")], f"{name}_post_area")
    kept = ctx.node("Greater", [ctx.reshape(area, [-1], f"{name}_post_area_flat"),
                                ctx.initializer(f"{name}_post_zero", np.float32(0))], f"{name}_post_kept")
    rows = ctx.node("Concat", [head, boxes], f"{name}_post_rows", axis=1)
    return (ctx.node("Compress", [rows, kept], f"{name}_post_kept_rows", axis=0),
            ctx.node("Compress", [det_scores, kept], f"{name}_post_kept_scores", axis=0))


def _best_first(ctx, name, rows, det_scores, keep_top_k):
    """Rows sorted by score, best first, at most keep_top_k of them (-1: all).

    Caffe picks the same keep_top_k rows but then groups them by label;
    OpenCV 4.x's port (group_by_classes off) emits them best first, and that
    order is what this export reproduces. TopK keeps equal scores in their
    NMS (label) order.
    """
    count = ctx.node("Shape", [det_scores], f"{name}_ndet")
    if keep_top_k >= 0:
        count = ctx.node("Min", [count, ctx.ints(f"{name}_keep", [keep_top_k])], f"{name}_nkeep")
    _, best = ctx.node("TopK", [det_scores, count], f"{name}_best", outputs=2, axis=0, largest=1, sorted=1)
    return ctx.node("Gather", [rows, best], f"{name}_sorted_rows", axis=0)
