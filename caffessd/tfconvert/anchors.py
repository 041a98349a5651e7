"""TF SSD anchors expressed as Caffe PriorBox layers, and the anchor order map.

TensorFlow's ssd_anchor_generator (multiple_grid_anchor_generator.py) gives
each feature map a list of (scale, aspect ratio) boxes per cell:
  scales s_i = min_scale + (max_scale - min_scale) * i / (num_layers - 1), then 1.0;
  layer 0 with reduce_boxes_in_lowest_layer: (0.1, 1.0), (s_0, 2.0), (s_0, 0.5);
  other layers: (s_i, a) for each aspect ratio a, then (sqrt(s_i * s_{i+1}),
  interpolated_scale_aspect_ratio).
A box is h = s / sqrt(a) * base_h, w = s * sqrt(a) * base_w, where the base
size is scaled by min(H, W) / H and min(H, W) / W, on a grid with centres at
(i + 0.5) / fh, (j + 0.5) / fw.

Caffe's PriorBox makes, per cell, a min_size square, an optional
sqrt(min_size * max_size) square, then one box per extra aspect ratio, all
at min_size, with centres at (i + 0.5) * step (step = image / feature map).
With min_size = s * min(H, W) pixels these boxes are TF's exactly. Aspect
ratios are listed explicitly with flip off, so TF's 0.3333 stays 0.3333
rather than becoming 1/3. A layer whose boxes do not fit one PriorBox (the
lowest layer's 0.1 square beside its s_0 boxes) becomes several PriorBox
layers interleaved per cell with Reshape/Slice/Concat.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from caffessd.errors import CaffessdError

from .pipeline import AnchorConfig


@dataclass(frozen=True)
class TFBox:
    scale: float
    aspect_ratio: float


def layer_scales(cfg: AnchorConfig) -> List[float]:
    if cfg.scales:
        scales = list(cfg.scales)
        if len(scales) != cfg.num_layers:
            raise CaffessdError(f"anchor generator lists {len(scales)} scales for "
                                f"{cfg.num_layers} layers")
    elif cfg.num_layers == 1:
        scales = [cfg.min_scale]
    else:
        scales = [cfg.min_scale + (cfg.max_scale - cfg.min_scale) * i / (cfg.num_layers - 1)
                  for i in range(cfg.num_layers)]
    return scales + [1.0]


def tf_layer_boxes(cfg: AnchorConfig) -> List[List[TFBox]]:
    """TF's per-cell box list of every layer, in TF's order."""
    scales = layer_scales(cfg)
    layers = []
    for index in range(cfg.num_layers):
        scale, scale_next = scales[index], scales[index + 1]
        if index == 0 and cfg.reduce_boxes_in_lowest_layer:
            boxes = [TFBox(0.1, 1.0), TFBox(scale, 2.0), TFBox(scale, 0.5)]
        else:
            boxes = [TFBox(scale, ar) for ar in cfg.aspect_ratios]
            if cfg.interpolated_scale_aspect_ratio > 0.0:
                boxes.append(TFBox(math.sqrt(scale * scale_next), cfg.interpolated_scale_aspect_ratio))
        layers.append(boxes)
    return layers


def box_size(box: TFBox, cfg: AnchorConfig, height: int, width: int) -> tuple:
    """Normalised (width, height) of a TF anchor on an image of height x width."""
    short = min(height, width)
    base_h = cfg.base_anchor_height * short / height
    base_w = cfg.base_anchor_width * short / width
    root = math.sqrt(box.aspect_ratio)
    return box.scale * root * base_w, box.scale / root * base_h


# ---------------------------------------------------------------- PriorBox plans

@dataclass
class PriorPart:
    """One Caffe PriorBox layer; `keep_square` False drops its min_size square."""

    min_size: float
    max_size: Optional[float] = None
    aspect_ratios: List[float] = field(default_factory=list)
    keep_square: bool = True

    def caffe_boxes(self, height: int, width: int) -> List[tuple]:
        """Normalised (w, h) per cell in PriorBox's order (only the kept ones)."""
        out = []
        if self.keep_square:
            out.append((self.min_size / width, self.min_size / height))
        if self.max_size is not None:
            side = math.sqrt(self.min_size * self.max_size)
            out.append((side / width, side / height))
        for ar in self.aspect_ratios:
            root = math.sqrt(ar)
            out.append((self.min_size * root / width, self.min_size / root / height))
        return out

    @property
    def boxes_made(self) -> int:
        return 1 + (self.max_size is not None) + len(self.aspect_ratios)


@dataclass
class LayerPriors:
    parts: List[PriorPart]
    tf_order: List[int]      # Caffe box k per cell is TF anchor tf_order[k]

    @property
    def num_boxes(self) -> int:
        return len(self.tf_order)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def plan_layer(boxes: Sequence[TFBox], cfg: AnchorConfig, height: int, width: int) -> LayerPriors:
    """PriorBox layers reproducing one layer's TF boxes, and the order map."""
    if cfg.base_anchor_height != cfg.base_anchor_width:
        raise CaffessdError("anchors with base_anchor_height != base_anchor_width cannot be "
                            "expressed as Caffe PriorBox squares")
    short = min(height, width) * cfg.base_anchor_height
    # Group TF boxes by scale, keeping first-seen order of scales.
    groups: dict = {}
    for box in boxes:
        groups.setdefault(box.scale, []).append(box.aspect_ratio)
    parts: List[PriorPart] = []
    scales = list(groups)
    used = set()
    for scale in scales:
        if scale in used:
            continue
        ratios = groups[scale]
        others = [r for r in ratios if not _same(r, 1.0)]
        has_square = any(_same(r, 1.0) for r in ratios)
        part = PriorPart(min_size=_tidy(scale * short), aspect_ratios=others, keep_square=has_square)
        used.add(scale)
        # Fold a lone square at another scale in as PriorBox's max_size square
        # (TF's interpolated anchor, sqrt(s_i * s_i+1)).
        if has_square:
            for other in scales:
                if other not in used and groups[other] and all(_same(r, 1.0) for r in groups[other]) \
                        and len(groups[other]) == 1:
                    part.max_size = _tidy(other ** 2 / scale * short)
                    used.add(other)
                    break
        parts.append(part)
    caffe = [wh for part in parts for wh in part.caffe_boxes(height, width)]
    tf = [box_size(b, cfg, height, width) for b in boxes]
    order = []
    for w, h in caffe:
        match = [i for i, (tw, th) in enumerate(tf) if _close(tw, w) and _close(th, h) and i not in order]
        if not match:
            raise CaffessdError("internal: a PriorBox box has no TF anchor counterpart")
        order.append(match[0])
    if sorted(order) != list(range(len(tf))):
        raise CaffessdError("cannot express this layer's TF anchors as PriorBox boxes "
                            f"(scales/aspect ratios {[(b.scale, b.aspect_ratio) for b in boxes]})")
    return LayerPriors(parts, order)


def _tidy(pixels: float) -> float:
    """Drop float noise (105.00000000000001 -> 105.0); Caffe stores float32 anyway."""
    return round(pixels, 6)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6


def plan_priors(cfg: AnchorConfig, height: int, width: int) -> List[LayerPriors]:
    if cfg.interpolated_scale_aspect_ratio not in (0.0, 1.0):
        raise CaffessdError("interpolated_scale_aspect_ratio other than 1.0 has no PriorBox form")
    return [plan_layer(boxes, cfg, height, width) for boxes in tf_layer_boxes(cfg)]
