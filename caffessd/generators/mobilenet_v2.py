"""MobileNetV2 backbone and SSD extra layers, named as chuanqi305's MobileNetv2-SSDLite
(whose names follow TensorFlow's: Conv, expanded_conv -> conv, conv_N, Conv_1, layer_19_*).

Backbone: `Conv` (3x3/2); inverted-residual blocks `conv` (no expansion) and
`conv_1`..`conv_16`, each `<block>/expand` (1x1, ReLU), `<block>/depthwise`
(3x3, ReLU), `<block>/project` (1x1, linear) and, where shapes allow, an
Eltwise `<block>/sum` whose top is `<block>`; then `Conv_1` (1x1, 1280).
Extra layers k = 1, 2, ...: `layer_19_1_{k+1}` (1x1), then "depthwise" (the
published nets, TF's SSDLite): `layer_19_2_{k+1}/depthwise` (3x3/2) and
`layer_19_2_{k+1}` (1x1); or "plain" (TF's ssd_mobilenet_v2): one 3x3/2 conv
`layer_19_2_{k+1}`.

Channels: make_divisible(d * width, 8, min_depth) for the block outputs, Conv
and Conv_1 (Conv_1 stays 1280 below width 1 with `finegrain`); expansions
make_divisible(input * 6, 8) (TF-slim does not apply min_depth to them); extra
layers max(int(d * width), max(16, min_depth)).
"""
from __future__ import annotations

import re
from typing import Optional

from caffessd.generators.net_builder import NetBuilder, add_eltwise_sum, conv_block

# (expansion t, output channels c, repeats n, first stride s), as in the paper.
BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

EXTRA_DEPTHS = [(256, 512), (128, 256), (128, 256), (64, 128)]
EXTRA_MIN_DEPTH = 16
LAST_CONV_DEPTH = 1280

_EXTRA_NAME = re.compile(r"^layer_19_[12]_(\d+)(/depthwise)?$")


def make_divisible(value: float, divisor: int = 8, minimum: int = 8) -> int:
    """TensorFlow MobileNetV2 channel rounding: nearest multiple of 8, never
    below `minimum` nor more than 10% below `value`."""
    rounded = max(minimum, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def build_backbone(b: NetBuilder, bottom: str = "data") -> str:
    config = b.config
    width, bn, minimum = config.width, config.uses_bn_in_backbone, config.min_depth
    blob = conv_block(b, "Conv", bottom, make_divisible(32 * width, minimum=minimum), kernel=3, stride=2, bn=bn)
    index = 0
    for expansion, channels, repeats, first_stride in BLOCKS:
        out_channels = make_divisible(channels * width, minimum=minimum)
        for repeat in range(repeats):
            blob = _inverted_residual(b, "conv" if index == 0 else f"conv_{index}", blob, expansion,
                                      out_channels, first_stride if repeat == 0 else 1, bn)
            index += 1
    last_width = 1.0 if config.finegrain and width < 1 else width
    return conv_block(b, "Conv_1", blob, make_divisible(LAST_CONV_DEPTH * last_width, minimum=minimum), bn=bn)


def _inverted_residual(b: NetBuilder, name: str, bottom: str, expansion: int, out_channels: int,
                       stride: int, bn: bool) -> str:
    in_channels = b.shape(bottom)[0]
    blob = bottom
    if expansion != 1:
        blob = conv_block(b, f"{name}/expand", blob, make_divisible(in_channels * expansion), bn=bn)
    blob = conv_block(b, f"{name}/depthwise", blob, b.shape(blob)[0], kernel=3, stride=stride,
                      depthwise=True, bn=bn)
    blob = conv_block(b, f"{name}/project", blob, out_channels, bn=bn, relu=False)
    if stride == 1 and in_channels == out_channels:
        return add_eltwise_sum(b, f"{name}/sum", [bottom, blob], name)
    return blob


def extra_index(name: str) -> Optional[int]:
    match = _EXTRA_NAME.match(name)
    if match and int(match.group(1)) >= 2:
        return int(match.group(1)) - 1
    return None


def build_extra(b: NetBuilder, k: int, bottom: str) -> str:
    width, bn = b.config.width, b.config.uses_bn_in_backbone
    minimum = max(EXTRA_MIN_DEPTH, b.config.min_depth)
    reduce, expand = (max(int(c * width), minimum) for c in EXTRA_DEPTHS[min(k, len(EXTRA_DEPTHS)) - 1])
    n = k + 1
    blob = conv_block(b, f"layer_19_1_{n}", bottom, reduce, bn=bn)
    if b.config.extra_layers == "plain":
        return conv_block(b, f"layer_19_2_{n}", blob, expand, kernel=3, stride=2, bn=bn)
    blob = conv_block(b, f"layer_19_2_{n}/depthwise", blob, reduce, kernel=3, stride=2, depthwise=True, bn=bn)
    return conv_block(b, f"layer_19_2_{n}", blob, expand, bn=bn)
