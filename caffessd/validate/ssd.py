"""SSD layers: PriorBox, DetectionOutput and MultiBoxLoss (LayerSetUp and
Reshape of prior_box_layer.cpp, detection_output_layer.cpp and
multibox_loss_layer.cpp in the SSD fork)."""
from __future__ import annotations

from caffessd.validate.registry import channels, checker, require, require_finite, require_int, shape_text


@checker("PriorBox", bottoms=(2, 2))
def prior_box(layer, inputs):
    param = layer.prior_box_param
    mins, maxs = list(param.min_size), list(param.max_size)
    for field in ("min_size", "max_size", "aspect_ratio", "variance", "step", "step_h", "step_w", "offset"):
        value = getattr(param, field)
        require_finite(list(value) if hasattr(value, "__len__") else [value], field)
    require_int([param.img_size, param.img_h, param.img_w], "img_size")
    require(mins, "min_size", "must be given")
    require(all(m > 0 for m in mins), "min_size", f"must be positive, got {mins}")
    if maxs:
        require(len(maxs) == len(mins), "max_size", f"needs one per min_size ({len(mins)}), has {len(maxs)}")
        require(all(b > a for a, b in zip(mins, maxs)), "max_size",
                f"must be greater than min_size ({maxs} vs {mins})")
    require(all(r > 0 for r in param.aspect_ratio), "aspect_ratio",
            f"must be positive, got {list(param.aspect_ratio)}")
    variances = list(param.variance)
    require(len(variances) in (0, 1, 4), "variance", f"give one or four, not {len(variances)}")
    require(all(v > 0 for v in variances), "variance", f"must be positive, got {variances}")
    has_hw = param.HasField("img_h") or param.HasField("img_w")
    if has_hw:
        require(not param.HasField("img_size"), "img_size", "give img_size or img_h/img_w, not both")
        require(param.img_h > 0 and param.img_w > 0, "img_h", "img_h and img_w should be larger than 0")
    elif param.HasField("img_size"):
        require(param.img_size > 0, "img_size", "should be larger than 0")
    if param.HasField("step_h") or param.HasField("step_w"):
        require(not param.HasField("step"), "step", "give step or step_h/step_w, not both")
        require(param.step_h > 0 and param.step_w > 0, "step_h", "step_h and step_w should be larger than 0")
    elif param.HasField("step"):
        require(param.step > 0, "step", "should be larger than 0")
    for index, shape in enumerate(inputs):
        require(len(shape) == 4, f"bottom {index}", f"needs a 4-D (N, C, H, W) input, got {shape_text(shape)}")


@checker("DetectionOutput", bottoms=(3, 4), tops=(1, 1))
def detection_output(layer, inputs):
    param = layer.detection_output_param
    require(param.HasField("num_classes"), "num_classes", "must be given")
    require(param.num_classes >= 1, "num_classes", f"must be at least 1, got {param.num_classes}")
    background = param.background_label_id
    require(-1 <= background < param.num_classes, "background_label_id",
            f"{background} must lie in [0, num_classes={param.num_classes}) or be -1 for none")
    nms = param.nms_param
    require_finite([param.confidence_threshold, nms.nms_threshold, nms.eta], "nms_param")
    require(0 <= nms.nms_threshold <= 1, "nms_param.nms_threshold", f"{nms.nms_threshold:g} must lie in [0, 1]")
    require(0 < nms.eta <= 1, "nms_param.eta", f"{nms.eta:g} must lie in (0, 1]")
    require(not nms.HasField("top_k") or nms.top_k >= -1, "nms_param.top_k", "must be positive, or -1 for all")
    require(param.keep_top_k >= -1, "keep_top_k", "must be positive, or -1 for all")
    _check_counts(param.num_classes, param.share_location, inputs)


@checker("MultiBoxLoss", bottoms=(4, 4), tops=(1, 1))
def multibox_loss(layer, inputs):
    param = layer.multibox_loss_param
    require(param.HasField("num_classes"), "num_classes", "must be given")
    require(param.num_classes >= 1, "num_classes", f"should not be less than 1, got {param.num_classes}")
    if param.conf_loss_type == param.SOFTMAX:
        require(0 <= param.background_label_id < param.num_classes, "background_label_id",
                f"{param.background_label_id} should lie in [0, num_classes={param.num_classes}) for Softmax")
    mining = param.do_neg_mining or param.mining_type != param.NONE
    if mining:
        require(param.share_location, "share_location", "negative mining needs share_location: true")
    _check_counts(param.num_classes, param.share_location, inputs[:3])


def _check_counts(num_classes: int, share_location: bool, inputs) -> None:
    """loc, conf and priors must describe the same number of priors."""
    loc, conf, priors = inputs[:3]
    require(loc[0] == conf[0], "bottom 1", f"loc {shape_text(loc)} and conf {shape_text(conf)} differ in batch")
    require(len(priors) >= 3, "bottom 2", f"priors {shape_text(priors)} are not PriorBox output (1x2x4P)")
    count = priors[2] // 4
    loc_classes = 1 if share_location else num_classes
    require(count * loc_classes * 4 == channels(loc), "bottom 0",
            f"{channels(loc)} location values do not match {count} priors x {loc_classes} x 4 = "
            f"{count * loc_classes * 4}")
    require(count * num_classes == channels(conf), "bottom 1",
            f"{channels(conf)} confidence values do not match {count} priors x {num_classes} classes = "
            f"{count * num_classes}")
