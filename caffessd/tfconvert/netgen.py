"""The deploy net a TF model converts into, built by gen-model.

gen-model (caffessd.generators) makes the MobileNet-SSD / MobileNetV2-SSD(Lite)
nets with the published layer names; here its options are set from the TF
model: width multiplier, input size, class count, TF's anchors as PriorBox
specs, ReLU6 + TF SAME padding in exact mode, BatchNorm eps 0.001, sigmoid
scores and the pipeline's NMS settings.

One TF structure gen-model does not make is ssd_mobilenet_v2's extra layers:
TF uses a plain 3x3 stride-2 conv ('layer_19_2_Conv2d_2_3x3_s2_512'), gen-model's
mnv2 nets (like the published ones) a depthwise 3x3 + 1x1 pair. `_plain_extras`
rewrites each such pair into the single 3x3 conv, keeping the padding layers.
"""
from __future__ import annotations

from typing import List, Sequence

from caffessd import caffe_pb2
from caffessd.errors import CaffessdError

from .anchors import LayerPriors
from .pipeline import PipelineConfig
from .zoo import BN_EPSILON, ModelSpec


def prior_specs(plans: Sequence[LayerPriors], variance) -> list:
    """gen-model PriorSpecs reproducing the planned PriorBox layers."""
    from caffessd.generators.config import PriorSpec

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
    from caffessd.generators.config import SSDConfig

    y_scale, x_scale, h_scale, w_scale = cfg.box_coder_scales
    variance = (1.0 / x_scale, 1.0 / y_scale, 1.0 / w_scale, 1.0 / h_scale)
    softmax = cfg.score_converter.upper() == "SOFTMAX"
    return SSDConfig(
        backbone=spec.backbone_name, head=spec.head_type, width=spec.depth_multiplier,
        input_width=width, input_height=height, num_classes=out_classes + 1,
        prior_specs=prior_specs(plans, variance),
        relu6=exact, tf_pad=exact, bn="none" if merge_bn else "all", bn_eps=BN_EPSILON,
        head_kernel=spec.box_kernel, conf_loss="softmax" if softmax else "logistic",
        nms_threshold=cfg.iou_threshold, conf_threshold=min(max(cfg.score_threshold, 0.0), 0.999),
        deploy_top_k=cfg.max_detections_per_class,
        name=spec.arch.replace("_", "-"),
    )


def deploy_net(spec: ModelSpec, cfg: PipelineConfig, height: int, width: int,
               plans: Sequence[LayerPriors], out_classes: int, exact: bool = True,
               merge_bn: bool = False) -> caffe_pb2.NetParameter:
    from caffessd.generators.build import build_net

    config = ssd_config(spec, cfg, height, width, plans, out_classes, exact, merge_bn)
    net = build_net(config, "deploy")
    if spec.arch == "ssd_mobilenet_v2":
        for conv in spec.extras:
            if conv.kernel == 3 and not conv.depthwise:
                _plain_extras(net, conv.caffe_layer)
    for layer in net.layer:
        if layer.type == "DetectionOutput":
            layer.detection_output_param.keep_top_k = cfg.max_total_detections
    return net


def _rename(blob: str, old: str, new: str) -> str:
    return new + blob[len(old):] if blob == old or blob.startswith(old + "/") else blob


def _plain_extras(net: caffe_pb2.NetParameter, name: str) -> None:
    """Turn `<name>/depthwise` (3x3/2, +BN/ReLU, +pad slices) and `<name>` (1x1)
    into one 3x3/2 conv `<name>` that keeps the depthwise conv's padding."""
    layers: List = list(net.layer)
    index = {layer.name: i for i, layer in enumerate(layers)}
    dw_name = f"{name}/depthwise"
    if dw_name not in index or name not in index:
        raise CaffessdError(f"the generated net has no '{dw_name}' + '{name}' pair to turn "
                            "into TF's 3x3 extra layer")
    start, end = index[dw_name], index[name]
    dw, pw = layers[start], layers[end]
    merged = caffe_pb2.LayerParameter()
    merged.CopyFrom(pw)
    del merged.bottom[:]
    merged.bottom.extend(dw.bottom)
    del merged.top[:]
    merged.top.extend(_rename(t, dw_name, name) for t in dw.top)
    p, q = merged.convolution_param, dw.convolution_param
    for field in ("pad", "stride", "kernel_size"):
        getattr(p, field)[:] = list(getattr(q, field))
    for field in ("pad_h", "pad_w"):
        if q.HasField(field):
            setattr(p, field, getattr(q, field))
    p.ClearField("group")
    p.ClearField("engine")
    keep = [merged]
    for layer in layers[start + 1:end]:
        if layer.type == "Slice":  # TF SAME padding: drop the first row/column
            moved = caffe_pb2.LayerParameter()
            moved.CopyFrom(layer)
            moved.bottom[:] = [_rename(b, dw_name, name) for b in layer.bottom]
            moved.top[:] = [_rename(t, dw_name, name) for t in layer.top]
            keep.append(moved)
        # the depthwise conv's BatchNorm/Scale/ReLU go away with it
    new_layers = layers[:start] + keep + layers[end + 1:]
    for layer in new_layers:
        if layer.type == "Silence":
            layer.bottom[:] = [_rename(b, dw_name, name) for b in layer.bottom]
    del net.layer[:]
    net.layer.extend(new_layers)
