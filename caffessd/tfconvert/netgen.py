"""The deploy net a TF model converts into, built by gen-model.

gen-model (caffessd.generators) makes the MobileNet-SSD / MobileNetV2-SSD(Lite)
nets with the published layer names; here its options are set from the TF
model: width multiplier, input size, class count, TF's anchors as PriorBox
specs, ReLU6 + TF SAME padding in exact mode, BatchNorm eps 0.001, sigmoid
scores and the pipeline's NMS settings.

The TF extra layers are gen-model's "plain" style (a 3x3 stride-2 conv) or,
with feature_extractor.use_depthwise, its "depthwise" style; the predictors
are SSD (one conv of the predictor's kernel) or SSDLite (depthwise + 1x1)
as convolutional_box_predictor.use_depthwise says, with the 1x1 layers before
the predictor where the checkpoint has them; channel rounding uses the
pipeline's min_depth (16 in the model-zoo configs).
"""
from __future__ import annotations

from typing import Sequence

from caffessd import caffe_pb2
from caffessd.errors import CaffessdError
from caffessd.generators.config import PriorSpec, SSDConfig
from caffessd.generators.build import build_net

from .anchors import LayerPriors
from .pipeline import PipelineConfig
from .zoo import BN_EPSILON, ModelSpec


def prior_specs(plans: Sequence[LayerPriors], variance) -> list:
    """gen-model PriorSpecs reproducing the planned PriorBox layers."""
    specs = []
    for index, plan in enumerate(plans):
        parts = plan.parts
        if len(parts) == 1 and parts[0].keep_square:
            part = parts[0]
            specs.append(PriorSpec(min_sizes=[part.min_size],
                                   max_sizes=[] if part.max_size is None else [part.max_size],
                                   aspect_ratios=list(part.aspect_ratios), flip=False, clip=False,
                                   variance=tuple(variance)))
        elif (len(parts) == 2 and parts[0].keep_square and not parts[0].aspect_ratios
              and parts[0].max_size is None and not parts[1].keep_square
              and parts[1].max_size is None and parts[1].aspect_ratios):
            specs.append(PriorSpec(min_sizes=[parts[1].min_size],
                                   aspect_ratios=list(parts[1].aspect_ratios), flip=False,
                                   clip=False, variance=tuple(variance),
                                   small_square=parts[0].min_size))
        else:
            raise CaffessdError(f"the anchors of feature map {index} have no PriorBox form "
                                "gen-model can build")
    return specs


def ssd_config(spec: ModelSpec, cfg: PipelineConfig, height: int, width: int,
               plans: Sequence[LayerPriors], out_classes: int, exact: bool, merge_bn: bool):
    y_scale, x_scale, h_scale, w_scale = cfg.box_coder_scales
    variance = (1.0 / x_scale, 1.0 / y_scale, 1.0 / w_scale, 1.0 / h_scale)
    softmax = cfg.score_converter.upper() == "SOFTMAX"
    return SSDConfig(
        backbone=spec.backbone_name, head=spec.head_type, width=spec.depth_multiplier,
        min_depth=spec.min_depth, extra_layers="depthwise" if spec.extras_depthwise else "plain",
        predictor_layers=spec.tower_layers, predictor_depths=spec.tower_depths,
        input_width=width, input_height=height, num_classes=out_classes + 1,
        prior_specs=prior_specs(plans, variance),
        # use_explicit_padding pads k-1 symmetrically, then a VALID conv: Caffe's own padding.
        relu6=exact, tf_pad=exact and not cfg.explicit_padding, bn="none" if merge_bn else "all", bn_eps=BN_EPSILON,
        head_kernel=spec.box_kernel, conf_loss="softmax" if softmax else "logistic",
        nms_threshold=cfg.iou_threshold, conf_threshold=min(max(cfg.score_threshold, 0.0), 0.999),
        name=spec.arch.replace("_", "-"),
    )


def deploy_net(spec: ModelSpec, cfg: PipelineConfig, height: int, width: int,
               plans: Sequence[LayerPriors], out_classes: int, exact: bool = True,
               merge_bn: bool = False) -> caffe_pb2.NetParameter:
    config = ssd_config(spec, cfg, height, width, plans, out_classes, exact, merge_bn)
    net = build_net(config, "deploy")
    for layer in net.layer:
        if layer.type == "DetectionOutput":
            # TF caps survivors per class after NMS, which nms_param.top_k (a cap on
            # candidates before NMS) is not: Caffe keeps every candidate and the
            # postprocessing note (below) carries TF's cap for caffessd.
            layer.detection_output_param.nms_param.ClearField("top_k")
            layer.detection_output_param.keep_top_k = cfg.max_total_detections
    return net


def postprocessing_note(cfg: PipelineConfig, tf2: bool = False) -> dict:
    """TF's post-processing as a caffessd note (see caffessd.onnxconv.ssd).

    The TF1 Object Detection API (object_detection/core/post_processing.py,
    multiclass_non_max_suppression) clips the decoded boxes to the image window
    before per-class NMS, drops boxes left with zero area, and keeps up to
    max_detections_per_class NMS survivors per class, max_total_detections in all.
    The TF2 API's version runs NMS on the unclipped boxes and then clips the
    sorted survivors and drops the zero-area ones (_clip_window_prune_boxes).
    """
    return {"postprocessing": {"clip_before_nms": not tf2, "clip_after_nms": tf2,
                               "max_per_class": int(cfg.max_detections_per_class),
                               "max_total": int(cfg.max_total_detections)}}

