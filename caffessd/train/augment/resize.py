"""Resizing, as the SSD fork's ApplyResize (im_transforms.cpp) with
cv::resize's interpolations, and the boxes through UpdateBBoxByResizePolicy.

Modes: WARP (to width x height), FIT_SMALL_SIZE (keep the aspect ratio, the
smaller side to its target; variable output size), FIT_LARGE_SIZE_AND_PAD
(keep the aspect ratio inside width x height and pad: CONSTANT with
pad_value, MIRRORED = reflect-101, REPEAT_NEAREST = replicate). The
interpolation is drawn uniformly from `interp_mode` (LINEAR without any).

Interpolations are cv::resize's on uint8, written as separable taps
(source index and weight per output pixel and axis) so each is one gather
and a weighted sum per axis:
- LINEAR: tf.image.resize bilinear (half-pixel centres, no antialias) is
  cv::resize INTER_LINEAR up to its fixed-point rounding (within 1 level)
  and TensorFlow's fastest kernel, so it is used as is;
- NEAREST: source floor(dx * src / dst);
- CUBIC: Keys a = -0.75, 4 taps, replicated border;
- LANCZOS4: 8 taps, OpenCV's normalised Lanczos window;
- AREA: exact pixel-area averaging when shrinking both axes (TensorFlow's
  'area' kernel, which is that), otherwise OpenCV's area-flavoured bilinear
  coefficients.
The tests compare each against cv2.resize.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from caffessd.train.augment.distort import saturate_uint8
from caffessd.train.augment.random import randint
from caffessd import caffe_pb2

INTERPOLATIONS = ("LINEAR", "AREA", "NEAREST", "CUBIC", "LANCZOS4")
RESIZE_MODES = ("WARP", "FIT_SMALL_SIZE", "FIT_LARGE_SIZE_AND_PAD")
PAD_MODES = ("CONSTANT", "MIRRORED", "REPEAT_NEAREST")


@dataclass(frozen=True)
class ResizeParams:
    height: int
    width: int
    resize_mode: str = "WARP"
    interp_modes: Tuple[str, ...] = ()
    pad_mode: str = "CONSTANT"
    pad_value: Tuple[float, ...] = ()
    height_scale: int = 0
    width_scale: int = 0

    @classmethod
    def from_proto(cls, param) -> "ResizeParams":
        enum = caffe_pb2.ResizeParameter
        return cls(height=param.height, width=param.width, resize_mode=enum.Resize_mode.Name(param.resize_mode),
                   interp_modes=tuple(enum.Interp_mode.Name(m) for m in param.interp_mode),
                   pad_mode=enum.Pad_mode.Name(param.pad_mode), pad_value=tuple(param.pad_value),
                   height_scale=param.height_scale, width_scale=param.width_scale)

    def pad_fill(self) -> Tuple[int, int, int]:
        """cv::Scalar(pad_value) as copyMakeBorder writes it into uint8."""
        values = list(self.pad_value) or [0.0]
        values = values * 3 if len(values) == 1 else values
        return tuple(int(np.clip(np.rint(v), 0, 255)) for v in values[:3])


# ---------------------------------------------------------------- taps per axis

def _positions(dst, src):
    """(dx as float64 [dst], scale = src / dst as float64) as cv::resize computes."""
    dst_f = tf.cast(dst, tf.float64)
    src_f = tf.cast(src, tf.float64)
    scale = 1.0 / (dst_f / src_f)
    return tf.range(dst_f, dtype=tf.float64), scale


def _centred(dx, scale):
    """fx = (float)((dx + 0.5) * scale - 0.5); sx = floor(fx); fx -= sx."""
    fx = tf.cast((dx + 0.5) * scale - 0.5, tf.float32)
    sx = tf.floor(fx)
    return tf.cast(sx, tf.int32), fx - sx


def _cubic_weights(x):
    a = -0.75
    w0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    w1 = ((a + 2) * x - (a + 3)) * x * x + 1
    w2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    return tf.stack([w0, w1, w2, 1.0 - w0 - w1 - w2], axis=-1)


def _lanczos4_weights(x):
    """OpenCV's interpolateLanczos4: sinc(t) sinc(t / 4) at the 8 tap
    distances t, normalised to sum 1 (one-hot below float epsilon)."""
    t = tf.cast(x[:, None], tf.float64) + 3.0 - tf.range(8, dtype=tf.float64)[None, :]
    near_zero = tf.abs(t) < 1e-9
    safe = tf.where(near_zero, tf.ones_like(t), t)
    w = tf.where(near_zero, tf.fill(tf.shape(t), tf.constant(math.pi * math.pi / 4, tf.float64)),
                 tf.sin(math.pi * safe) * tf.sin(math.pi * safe / 4) / (safe * safe))
    w = tf.cast(w / tf.reduce_sum(w, axis=1, keepdims=True), tf.float32)
    exact = (x < np.finfo(np.float32).eps)[:, None]
    return tf.where(exact, tf.one_hot(tf.fill(tf.shape(x), 3), 8, dtype=tf.float32), w)


def _area_linear_taps(dst, src):
    """INTER_AREA when not shrinking both axes: bilinear with OpenCV's area
    coefficients (sx = floor(dx * scale), fx from the cell's right edge)."""
    dx, scale = _positions(dst, src)
    sx = tf.floor(dx * scale)
    fx = tf.cast((dx + 1) - (sx + 1) / scale, tf.float32)
    fx = tf.where(fx <= 0, 0.0, fx - tf.floor(fx))
    return _two_taps(tf.cast(sx, tf.int32), fx, src)


def _two_taps(sx, fx, src):
    low = sx < 0
    high = sx >= src - 1
    fx = tf.where(low | high, 0.0, fx)
    sx = tf.where(low, 0, tf.where(high, src - 1, sx))
    index = tf.clip_by_value(tf.stack([sx, sx + 1], axis=1), 0, src - 1)
    return index, tf.stack([1.0 - fx, fx], axis=1)


def axis_taps(mode: str, dst, src):
    """(source index [dst, K] int32, weight [dst, K] float32) for one axis."""
    if mode == "NEAREST":
        dx, scale = _positions(dst, src)
        sx = tf.minimum(tf.cast(tf.floor(dx * scale), tf.int32), src - 1)
        return sx[:, None], tf.ones([dst, 1], tf.float32)
    if mode == "LINEAR":
        dx, scale = _positions(dst, src)
        return _two_taps(*_centred(dx, scale), src)
    if mode in ("CUBIC", "LANCZOS4"):
        dx, scale = _positions(dst, src)
        sx, fx = _centred(dx, scale)
        first, count, weights = (-1, 4, _cubic_weights(fx)) if mode == "CUBIC" else (-3, 8, _lanczos4_weights(fx))
        index = sx[:, None] + first + tf.range(count)[None, :]
        return tf.clip_by_value(index, 0, src - 1), weights
    if mode == "AREA_LINEAR":
        return _area_linear_taps(dst, src)
    raise ValueError(f"unknown interpolation {mode}")


def _resample(image, index, weights, axis):
    """One axis: sum over taps k of weight[:, k] * image gathered at index[:, k].

    Taps are accumulated one at a time, gathering before casting to float,
    so a large source (an expanded canvas) never becomes a [dst, K, ...]
    float tensor."""
    taps = index.shape[1]
    out = None
    for k in range(taps):
        gathered = tf.cast(tf.gather(image, index[:, k], axis=axis), tf.float32)
        w = weights[:, k, None, None] if axis == 0 else weights[None, :, k, None]
        out = gathered * w if out is None else out + gathered * w
    return out


def resize_taps(image, height, width, mode: str):
    """cv::resize(image, (width, height), mode) on a uint8 [H, W, C] image
    (modes with a fixed tap count: NEAREST, CUBIC, LANCZOS4, and AREA's
    bilinear flavour)."""
    src_h, src_w = tf.shape(image)[0], tf.shape(image)[1]
    index_y, weight_y = axis_taps(mode, height, src_h)
    index_x, weight_x = axis_taps(mode, width, src_w)
    out = _resample(_resample(image, index_y, weight_y, 0), index_x, weight_x, 1)
    return saturate_uint8(out)


def _resize_area(image, height, width):
    """INTER_AREA: when shrinking both axes cv::resize averages pixel areas,
    which is TensorFlow's 'area' method (checked within 1 level against
    cv2.resize); otherwise OpenCV's area-flavoured bilinear taps."""
    src_h, src_w = tf.shape(image)[0], tf.shape(image)[1]
    shrink_both = (src_w >= width) & (src_h >= height)
    return tf.cond(shrink_both,
                   lambda: saturate_uint8(tf.image.resize(image, tf.stack([height, width]), method="area")),
                   lambda: resize_taps(image, height, width, "AREA_LINEAR"))


def cv_resize(image, height, width, mode: str = "LINEAR"):
    """cv::resize of a uint8 image [H, W, 3] to (height, width) with `mode`."""
    if mode == "LINEAR":
        resized = tf.image.resize(image, tf.stack([height, width]), method="bilinear", antialias=False)
        return saturate_uint8(resized)
    if mode == "AREA":
        return _resize_area(image, height, width)
    return resize_taps(image, height, width, mode)


def random_resize(image, height, width, modes: Sequence[str], seed):
    """cv::resize with an interpolation drawn uniformly from `modes`."""
    modes = tuple(modes) or ("LINEAR",)
    if len(modes) == 1:
        return cv_resize(image, height, width, modes[0])
    choice = randint(seed, len(modes))
    branches = {i: (lambda m=m: cv_resize(image, height, width, m)) for i, m in enumerate(modes)}
    return tf.switch_case(choice, branches)


# ---------------------------------------------------------------- resize modes

def fit_size(params: ResizeParams, src_h, src_w):
    """The resized (height, width) before any padding, per mode."""
    if params.resize_mode == "WARP":
        return tf.constant(params.height), tf.constant(params.width)
    aspect = tf.cast(src_w, tf.float32) / tf.cast(src_h, tf.float32)
    new_aspect = np.float32(params.width) / np.float32(params.height)
    by_width = (tf.cast(params.width, tf.int32), tf.cast(tf.floor(np.float32(params.width) / aspect), tf.int32))
    by_height = (tf.cast(tf.floor(aspect * np.float32(params.height)), tf.int32), tf.cast(params.height, tf.int32))
    if params.resize_mode == "FIT_LARGE_SIZE_AND_PAD":
        wide = aspect > new_aspect
    elif params.resize_mode == "FIT_SMALL_SIZE":
        wide = aspect < new_aspect
    else:
        raise ValueError(params.resize_mode)
    width = tf.where(wide, by_width[0], by_height[0])
    height = tf.where(wide, by_width[1], by_height[1])
    return height, width


def _pad(image, top, bottom, left, right, params: ResizeParams):
    if params.pad_mode == "CONSTANT":
        fill = params.pad_fill()
        paddings = [[top, bottom], [left, right]]
        return tf.stack([tf.pad(image[:, :, c], paddings, constant_values=tf.constant(fill[c], tf.uint8))
                         for c in range(3)], axis=-1)
    if params.pad_mode == "MIRRORED":  # BORDER_REFLECT101
        return tf.pad(image, [[top, bottom], [left, right], [0, 0]], mode="REFLECT")
    # REPEAT_NEAREST: BORDER_REPLICATE
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    rows = tf.clip_by_value(tf.range(-top, h + bottom), 0, h - 1)
    cols = tf.clip_by_value(tf.range(-left, w + right), 0, w - 1)
    return tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)


def apply_resize(image, params: ResizeParams, seed):
    """ApplyResize on a uint8 image [H, W, 3]."""
    src_h, src_w = tf.shape(image)[0], tf.shape(image)[1]
    height, width = fit_size(params, src_h, src_w)
    resized = random_resize(image, height, width, params.interp_modes, seed)
    if params.resize_mode != "FIT_LARGE_SIZE_AND_PAD":
        return resized
    extra_h, extra_w = params.height - height, params.width - width
    top, left = extra_h // 2, extra_w // 2
    padded = _pad(resized, top, extra_h - top, left, extra_w - left, params)
    return tf.ensure_shape(padded, [params.height, params.width, 3])


def update_boxes(params: ResizeParams, src_h, src_w, boxes):
    """UpdateBBoxByResizePolicy: normalised boxes of the source -> of the
    resized (and padded) image."""
    old_w, old_h = tf.cast(src_w, tf.float32), tf.cast(src_h, tf.float32)
    new_w, new_h = tf.constant(float(params.width)), tf.constant(float(params.height))
    xmin, ymin, xmax, ymax = tf.unstack(boxes * tf.stack([old_w, old_h, old_w, old_h]), num=4, axis=-1)
    aspect = old_w / old_h
    new_aspect = new_w / new_h

    def warp(nw, nh):
        return (tf.maximum(0.0, xmin * nw / old_w), tf.maximum(0.0, ymin * nh / old_h),
                tf.minimum(nw, xmax * nw / old_w), tf.minimum(nh, ymax * nh / old_h), nw, nh)

    if params.resize_mode == "WARP":
        x0, y0, x1, y1, nw, nh = warp(new_w, new_h)
    elif params.resize_mode == "FIT_SMALL_SIZE":
        taller = aspect < new_aspect
        nh = tf.where(taller, new_w / aspect, new_h)
        nw = tf.where(taller, new_w, aspect * new_h)
        x0, y0, x1, y1, nw, nh = warp(nw, nh)
    elif params.resize_mode == "FIT_LARGE_SIZE_AND_PAD":
        wide = aspect > new_aspect
        pad_y = (new_h - new_w / aspect) / 2
        pad_x = (new_w - aspect * new_h) / 2
        wx0, wy0, wx1, wy1, _, _ = warp(new_w, new_h)
        py0 = pad_y + tf.maximum(0.0, ymin * (new_h - 2 * pad_y) / old_h)
        py1 = pad_y + tf.minimum(new_h, ymax * (new_h - 2 * pad_y) / old_h)
        px0 = pad_x + tf.maximum(0.0, xmin * (new_w - 2 * pad_x) / old_w)
        px1 = pad_x + tf.minimum(new_w, xmax * (new_w - 2 * pad_x) / old_w)
        x0, x1 = tf.where(wide, wx0, px0), tf.where(wide, wx1, px1)
        y0, y1 = tf.where(wide, py0, wy0), tf.where(wide, py1, wy1)
        nw, nh = new_w, new_h
    else:
        raise ValueError(params.resize_mode)
    return tf.stack([x0 / nw, y0 / nh, x1 / nw, y1 / nh], axis=-1)


def extrapolate_boxes(params: ResizeParams, src_h, src_w, crop_box, boxes):
    """ExtrapolateBBox: only FIT_SMALL_SIZE with height_scale and width_scale."""
    if not (params.height_scale > 0 and params.width_scale > 0 and params.resize_mode == "FIT_SMALL_SIZE"):
        return boxes
    aspect = tf.cast(src_w, tf.float32) / tf.cast(src_h, tf.float32)
    rw, rh = float(params.width), float(params.height)
    taller = aspect < rw / rh
    resize_h = tf.where(taller, rw / aspect, rh)
    resize_w = tf.where(taller, rw, rh * aspect)
    crop_h = resize_h * (crop_box[3] - crop_box[1])
    crop_w = resize_w * (crop_box[2] - crop_box[0])
    factor = tf.stack([crop_w / params.width_scale, crop_h / params.height_scale] * 2)
    return boxes * factor
