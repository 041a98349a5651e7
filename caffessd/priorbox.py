"""PriorBox in numpy, following the SSD fork of Caffe (prior_box_layer.cpp).

Priors only depend on the feature-map and image sizes, so the converter
computes them once and stores the result as a constant.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from caffessd import caffe_pb2
from caffessd.layers import prior_aspect_ratios


def _image_size(param: caffe_pb2.PriorBoxParameter, image_hw: Sequence[int]):
    if param.HasField("img_h") or param.HasField("img_w"):
        return float(param.img_h), float(param.img_w)
    if param.HasField("img_size"):
        return float(param.img_size), float(param.img_size)
    return float(image_hw[0]), float(image_hw[1])


def _step(param: caffe_pb2.PriorBoxParameter, img_h: float, img_w: float, layer_h: int, layer_w: int):
    if param.HasField("step_h") or param.HasField("step_w"):
        return float(param.step_h), float(param.step_w)
    if param.HasField("step") and param.step > 0:
        return float(param.step), float(param.step)
    # Caffe divides in float.
    return float(np.float32(img_h) / np.float32(layer_h)), float(np.float32(img_w) / np.float32(layer_w))


def cell_box_sizes(param: caffe_pb2.PriorBoxParameter):
    """(width, height) of each prior of one cell, in Caffe's order: per min
    size, the square min box, the sqrt(min*max) box, then the other ratios."""
    ratios = prior_aspect_ratios(param)
    sizes = []
    for s, min_size in enumerate(param.min_size):
        sizes.append((min_size, min_size))
        if len(param.max_size) > s:
            side = math.sqrt(min_size * param.max_size[s])
            sizes.append((side, side))
        for ratio in ratios:
            if abs(ratio - 1.0) < 1e-6:
                continue
            sizes.append((min_size * math.sqrt(ratio), min_size / math.sqrt(ratio)))
    return sizes


def variances(param: caffe_pb2.PriorBoxParameter) -> np.ndarray:
    values = list(param.variance)
    if len(values) == 1:
        values = values * 4
    elif not values:
        values = [0.1] * 4
    return np.asarray(values, dtype=np.float32)


def prior_boxes(param: caffe_pb2.PriorBoxParameter, feature_hw: Sequence[int], image_hw: Sequence[int]) -> np.ndarray:
    """The PriorBox top: shape (1, 2, H*W*priors*4), boxes then variances."""
    layer_h, layer_w = int(feature_hw[0]), int(feature_hw[1])
    img_h, img_w = _image_size(param, image_hw)
    step_h, step_w = _step(param, img_h, img_w, layer_h, layer_w)
    sizes = np.asarray(cell_box_sizes(param), dtype=np.float64)  # (K, 2) as (w, h)
    offset = float(param.offset)
    cy, cx = np.meshgrid((np.arange(layer_h) + offset) * step_h, (np.arange(layer_w) + offset) * step_w, indexing="ij")
    cx = cx.reshape(-1, 1)
    cy = cy.reshape(-1, 1)
    half_w, half_h = sizes[:, 0] / 2.0, sizes[:, 1] / 2.0
    boxes = np.stack([(cx - half_w) / img_w, (cy - half_h) / img_h,
                      (cx + half_w) / img_w, (cy + half_h) / img_h], axis=-1)  # (H*W, K, 4)
    boxes = boxes.astype(np.float32).reshape(-1)
    if param.clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    var = np.tile(variances(param), boxes.size // 4)
    return np.stack([boxes, var]).reshape(1, 2, -1)
