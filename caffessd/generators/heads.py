"""SSD and SSDLite heads, default boxes, and the stage-specific output layers.

Per feature layer `f` (in order): `f_mbox_loc` (+ _perm, _flat), `f_mbox_conf`
(+ _perm, _flat), `f_mbox_priorbox`; then the Concats `mbox_loc`, `mbox_conf`,
`mbox_priorbox`. SSD heads predict with one conv (1x1 for mnv1, 3x3 for mnv2
as published); SSDLite heads with a depthwise 3x3 `<pred>/depthwise` (+BN,
ReLU) and a 1x1. Train ends in MultiBoxLoss; test and deploy in
Reshape -> Softmax/Sigmoid -> Flatten -> DetectionOutput (+ DetectionEvaluate
in test).
"""
from __future__ import annotations

from typing import Sequence, Tuple

from caffessd import caffe_pb2
from caffessd.generators.config import PriorSpec
from caffessd.layers import expand_aspect_ratios
from caffessd.generators.net_builder import (
    NetBuilder, add_concat, add_conv, add_permute_flatten, add_reshape, add_silence, conv_block,
)

# The box and class predictors' weight std with --from-scratch (see _prediction).
HEAD_STD_FROM_SCRATCH = 0.03


def add_heads(b: NetBuilder, features: Sequence[str], specs: Sequence[PriorSpec]) -> Tuple[str, str, str]:
    classes = b.config.num_classes
    locs, confs, priors = [], [], []
    for index, (feature, spec) in enumerate(zip(features, specs)):
        boxes = spec.boxes_per_cell()
        bottom = _tower(b, feature, index)
        loc = _prediction(b, bottom, f"{feature}_mbox_loc", boxes * 4, is_conf=False)
        locs.append(add_permute_flatten(b, loc))
        conf = _prediction(b, bottom, f"{feature}_mbox_conf", boxes * classes, is_conf=True)
        confs.append(add_permute_flatten(b, conf))
        priors.append(add_priors(b, feature, spec, f"{feature}_mbox_priorbox"))
    return (add_concat(b, "mbox_loc", locs, axis=1), add_concat(b, "mbox_conf", confs, axis=1),
            add_concat(b, "mbox_priorbox", priors, axis=2))


def _tower(b: NetBuilder, feature: str, index: int) -> str:
    """The 1x1 layers both predictors of head `index` read (TF's layers before the predictor)."""
    config = b.config
    depths = config.predictor_depths or []
    depth = depths[index] if index < len(depths) else 0
    bottom = feature
    for j in range(config.predictor_layers if depth > 0 else 0):
        bottom = conv_block(b, f"{feature}_mbox_conv{j}", bottom, depth, bn=config.uses_bn_in_heads,
                            lr_mult=b.lr_mult)
    return bottom


def _prediction(b: NetBuilder, feature: str, top: str, num_output: int, is_conf: bool) -> str:
    config = b.config
    # Class predictions are new layers when fine-tuning; the rest is pretrained.
    lr_mult = 1.0 if is_conf else b.lr_mult
    name = f"{top}_new" if is_conf and config.new_conf_layers else top
    bottom, kernel = feature, config.head_kernel
    if config.head == "ssdlite":
        channels = b.shape(feature)[0]
        bottom = conv_block(b, f"{top}/depthwise", feature, channels, kernel=3, depthwise=True,
                            bn=config.uses_bn_in_heads, lr_mult=lr_mult)
        kernel = 1
    # From scratch, the predictors start small (N(0, 0.03), as torchvision's SSD heads): the
    # first scores and offsets are near 0 rather than msra's unit-variance logits, which a
    # short run from scratch takes hundreds of iterations to undo (docs/training-recipe.md).
    std = HEAD_STD_FROM_SCRATCH if config.from_scratch else None
    return add_conv(b, name, bottom, num_output, kernel=kernel, lr_mult=lr_mult, top=top, weight_std=std)


# ---------------------------------------------------------------- priors

def add_priors(b: NetBuilder, feature: str, spec: PriorSpec, top: str) -> str:
    if spec.small_square is not None:
        return add_tf_lowest_priors(b, feature, spec, top)
    return add_priorbox(b, top, feature, spec, spec.min_sizes, spec.max_sizes, spec.aspect_ratios, top)


def add_priorbox(b: NetBuilder, name: str, feature: str, spec: PriorSpec, min_sizes: Sequence[float],
                 max_sizes: Sequence[float], aspect_ratios: Sequence[float], top: str) -> str:
    layer = b.layer(name, "PriorBox", [feature, "data"], [top])
    param = layer.prior_box_param
    param.min_size.extend(min_sizes)
    param.max_size.extend(max_sizes)
    param.aspect_ratio.extend(aspect_ratios)
    param.flip = spec.flip
    param.clip = spec.clip
    param.variance.extend(spec.variance)
    if spec.steps is not None:
        step_h, step_w = spec.steps
        if step_h == step_w:
            param.step = step_h
        else:
            param.step_h, param.step_w = step_h, step_w
    param.offset = spec.offset
    return top


def add_tf_lowest_priors(b: NetBuilder, feature: str, spec: PriorSpec, top: str) -> str:
    """TensorFlow's lowest-layer boxes per cell: a small square, then the
    non-square boxes of min_sizes[0], from layers Caffe and OpenCV both run.

    A PriorBox always starts a cell with the square of its min size, so two are
    used: one for the small square alone, one for min_sizes[0] with its
    aspect ratios. Viewed as (1, 2, cells, 4 * boxes), the second loses its
    first 4 values per cell (its square) to a Slice and the rest is joined
    after the small square on axis 3; a final Reshape restores (1, 2, N*4).
    """
    main_boxes = len(expand_aspect_ratios(spec.aspect_ratios, spec.flip))
    small = add_priorbox(b, f"{top}_small", feature, spec, [spec.small_square], [], [], f"{top}_small")
    main = add_priorbox(b, f"{top}_main", feature, spec, spec.min_sizes[:1], [], spec.aspect_ratios,
                        f"{top}_main")
    small_cells = add_reshape(b, f"{small}_cells", small, [0, 0, -1, 4])
    main_cells = add_reshape(b, f"{main}_cells", main, [0, 0, -1, 4 * main_boxes])
    square, rest = f"{main}_square", f"{main}_rect"
    sliced = b.layer(f"{main}_slice", "Slice", [main_cells], [square, rest])
    sliced.slice_param.axis = 3
    sliced.slice_param.slice_point.append(4)
    add_silence(b, f"{main}_silence", [square])
    cells = add_concat(b, f"{top}_cells", [small_cells, rest], axis=3)
    return add_reshape(b, top, cells, [0, 0, -1])


# ---------------------------------------------------------------- outputs

def add_loss(b: NetBuilder, loc: str, conf: str, priors: str) -> None:
    config = b.config
    layer = b.layer("mbox_loss", "MultiBoxLoss", [loc, conf, priors, "label"], ["mbox_loss"])
    layer.include.add().phase = caffe_pb2.TRAIN
    layer.propagate_down.extend([True, True, False, False])
    layer.loss_param.normalization = caffe_pb2.LossParameter.VALID
    p = layer.multibox_loss_param
    p.loc_loss_type = caffe_pb2.MultiBoxLossParameter.SMOOTH_L1
    p.conf_loss_type = (caffe_pb2.MultiBoxLossParameter.SOFTMAX if config.conf_loss == "softmax"
                        else caffe_pb2.MultiBoxLossParameter.LOGISTIC)
    p.loc_weight = 1.0
    p.num_classes = config.num_classes
    p.share_location = True
    p.match_type = caffe_pb2.MultiBoxLossParameter.PER_PREDICTION
    p.overlap_threshold = 0.5
    p.use_prior_for_matching = True
    p.background_label_id = 0
    p.use_difficult_gt = True
    p.neg_pos_ratio = 3.0
    p.neg_overlap = 0.5
    p.code_type = caffe_pb2.PriorBoxParameter.CENTER_SIZE
    p.ignore_cross_boundary_bbox = False
    p.mining_type = caffe_pb2.MultiBoxLossParameter.MAX_NEGATIVE


def add_detection_output(b: NetBuilder, loc: str, conf: str, priors: str) -> str:
    """Class scores (softmax, or sigmoid for the logistic loss), then DetectionOutput."""
    config = b.config
    classes = config.num_classes
    reshaped = add_reshape(b, "mbox_conf_reshape", conf, [0, -1, classes])
    if config.conf_loss == "softmax":
        scores = b.layer("mbox_conf_softmax", "Softmax", [reshaped], ["mbox_conf_softmax"])
        scores.softmax_param.axis = 2
    else:
        scores = b.layer("mbox_conf_sigmoid", "Sigmoid", [reshaped], ["mbox_conf_sigmoid"])
    flat = b.layer("mbox_conf_flatten", "Flatten", [scores.top[0]], ["mbox_conf_flatten"])
    flat.flatten_param.axis = 1

    test = b.stage == "test"
    layer = b.layer("detection_out", "DetectionOutput", [loc, "mbox_conf_flatten", priors], ["detection_out"])
    layer.include.add().phase = caffe_pb2.TEST
    p = layer.detection_output_param
    p.num_classes = classes
    p.share_location = True
    p.background_label_id = 0
    own = config.test_nms_threshold if test else config.deploy_nms_threshold
    p.nms_param.nms_threshold = config.nms_threshold if own is None else own
    p.nms_param.top_k = config.test_top_k if test else config.deploy_top_k
    p.code_type = caffe_pb2.PriorBoxParameter.CENTER_SIZE
    p.keep_top_k = config.test_keep_top_k if test else config.deploy_keep_top_k
    p.confidence_threshold = config.test_conf_threshold if test else config.conf_threshold
    return "detection_out"


def add_detection_evaluate(b: NetBuilder) -> None:
    layer = b.layer("detection_eval", "DetectionEvaluate", ["detection_out", "label"], ["detection_eval"])
    layer.include.add().phase = caffe_pb2.TEST
    p = layer.detection_evaluate_param
    p.num_classes = b.config.num_classes
    p.background_label_id = 0
    p.overlap_threshold = 0.5
    p.evaluate_difficult_gt = False

