"""MobileNet (v1) backbone and SSD extra layers, named as chuanqi305's MobileNet-SSD.

Backbone: conv0 (3x3/2), then 13 depthwise-separable blocks `convN/dw` +
`convN`. Extra layers k = 1, 2, ...: `conv{13+k}_1` (1x1) and `conv{13+k}_2`
(3x3/2, "plain", the default with SSD heads; "depthwise", the default with
SSDLite heads: a depthwise `conv{13+k}_2/dw` 3x3/2 and a 1x1 `conv{13+k}_2`).
Channels: max(int(d * width), min_depth), extra layers at least 16 as in TF.
"""
from __future__ import annotations

import re
from typing import Optional

from caffessd.generators.net_builder import NetBuilder, conv_block

# (stride of the depthwise conv, output channels of the pointwise conv)
BLOCKS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
          (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024)]

# (1x1 channels, 3x3 channels) of the extra layers; later ones repeat the last.
EXTRA_DEPTHS = [(256, 512), (128, 256), (128, 256), (64, 128)]

# TF's SSD configs use min_depth 16, which the extra layers keep even when the
# backbone is built with a smaller one (the published nets' choice).
EXTRA_MIN_DEPTH = 16

_EXTRA_NAME = re.compile(r"^conv(\d+)_[12](/dw)?$")


def depth(channels: int, width: float, minimum: int = 8) -> int:
    """Channel rounding of TF-slim's MobileNet v1: max(int(d * width), min_depth)."""
    return max(int(channels * width), minimum)


def build_backbone(b: NetBuilder, bottom: str = "data") -> str:
    width, bn, minimum = b.config.width, b.config.uses_bn_in_backbone, b.config.min_depth
    blob = conv_block(b, "conv0", bottom, depth(32, width, minimum), kernel=3, stride=2, bn=bn)
    for index, (stride, channels) in enumerate(BLOCKS, start=1):
        blob = conv_block(b, f"conv{index}/dw", blob, b.shape(blob)[0], kernel=3, stride=stride,
                          depthwise=True, bn=bn)
        blob = conv_block(b, f"conv{index}", blob, depth(channels, width, minimum), bn=bn)
    return blob


def extra_index(name: str) -> Optional[int]:
    """1-based index of the extra layer a blob name belongs to (None: backbone)."""
    match = _EXTRA_NAME.match(name)
    if match and int(match.group(1)) >= 14:
        return int(match.group(1)) - 13
    return None


def build_extra(b: NetBuilder, k: int, bottom: str) -> str:
    width, bn = b.config.width, b.config.uses_bn_in_backbone
    minimum = max(EXTRA_MIN_DEPTH, b.config.min_depth)
    reduce, expand = (depth(c, width, minimum) for c in EXTRA_DEPTHS[min(k, len(EXTRA_DEPTHS)) - 1])
    n = 13 + k
    blob = conv_block(b, f"conv{n}_1", bottom, reduce, bn=bn)
    if b.config.extra_layers == "depthwise":
        blob = conv_block(b, f"conv{n}_2/dw", blob, reduce, kernel=3, stride=2, depthwise=True, bn=bn)
        return conv_block(b, f"conv{n}_2", blob, expand, bn=bn)
    return conv_block(b, f"conv{n}_2", blob, expand, kernel=3, stride=2, bn=bn)
