"""Convolution, Deconvolution and InnerProduct in NHWC with Caffe's explicit padding.

Filters are kept in the layout TensorFlow's kernels take (`convolution_storage`;
caffessd.train.executor.layouts says why), so no step transposes them; the
store converts from and to Caffe's (O, I/group, kh, kw) at its edges. Caffe
pads `pad` cells on both sides and floors the output size. That is passed to
TensorFlow as "VALID" when there is no padding, as "SAME" when TensorFlow's
SAME pads exactly the same cells (stride 1 with centred kernels, and stride 2
on odd sizes), else as an explicit tf.pad of the cells the windows reach
followed by a VALID convolution: oneDNN's backward kernels take VALID and
SAME, while an EXPLICIT-padded Conv2D falls back to Eigen's 2-4x slower
backward pass.
"""
from __future__ import annotations

from caffessd.layers import conv_geometry
from caffessd.train.executor.context import NHWC
from caffessd.train.executor.layouts import BlobLayout
from caffessd.train.executor.registry import builder, storage
from caffessd.errors import UnsupportedLayerError


def _explicit(pad):
    return [[0, 0], [pad[0], pad[0]], [pad[1], pad[1]], [0, 0]]


def _padding_mode(pad, kernel, stride, dilation, in_hw, out_hw):
    """"VALID" or "SAME" when either computes Caffe's windows, else None."""
    if not any(pad):
        return "VALID"
    for p, k, s, d, size, out in zip(pad, kernel, stride, dilation, in_hw, out_hw):
        extent = (k - 1) * d + 1
        same_out = -(-size // s)
        total = max((same_out - 1) * s + extent - size, 0)
        if same_out != out or total // 2 != p:
            return None
    return "SAME"


def _padded(tf, x, pad, kernel, stride, dilation, in_hw, out_hw):
    """x padded with Caffe's zeros where the windows reach (the right/bottom
    cells past the last window are left out)."""
    after = [max(0, (o - 1) * s + (k - 1) * d + 1 - size - p)
             for p, k, s, d, size, o in zip(pad, kernel, stride, dilation, in_hw, out_hw)]
    return tf.pad(x, [[0, 0], [pad[0], after[0]], [pad[1], after[1]], [0, 0]])


def _depthwise_multiplier(info):
    """Output channels per input channel when the layer is depthwise (group = channels), else None."""
    group, channels = int(info.layer.convolution_param.group or 1), info.input_shapes[0][1]
    out_channels = info.layer.convolution_param.num_output
    if group > 1 and group == channels and out_channels % channels == 0:
        return out_channels // channels
    return None


@storage("Convolution")
def convolution_storage(info):
    """conv2d's (kh, kw, I, O); depthwise_conv2d's (kh, kw, C, multiplier), Caffe's
    output channel c*m + j reading input channel c; other groups stay in Caffe's layout."""
    if not info.param_shapes:
        return []
    shape = info.param_shapes[0]
    if len(shape) != 4:
        return []
    if int(info.layer.convolution_param.group or 1) == 1:
        return [BlobLayout.transposed(shape, (2, 3, 1, 0))]
    multiplier = _depthwise_multiplier(info)
    if multiplier is not None:
        return [BlobLayout.transposed(shape, (2, 3, 0, 1), grouped=(shape[0] // multiplier, multiplier) + tuple(shape[2:]))]
    return []


@builder("Convolution")
def convolution(ctx, info):
    tf = ctx.tf
    layer, param = info.layer, info.layer.convolution_param
    kernel, stride, pad, dilation = conv_geometry(param, 2)
    group = int(param.group or 1)
    x = ctx.get_nhwc(layer.bottom[0])
    params = ctx.params(info, convolution_storage(info))
    weight = params[0]
    strides = [1, stride[0], stride[1], 1]
    in_hw, out_hw = info.input_shapes[0][2:4], info.output_shapes[0][2:4]
    mode = _padding_mode(pad, kernel, stride, dilation, in_hw, out_hw)
    if mode is None:
        x = _padded(tf, x, pad, kernel, stride, dilation, in_hw, out_hw)
        mode = "VALID"
    if group == 1:
        y = tf.nn.conv2d(x, weight, strides, mode, dilations=[1, dilation[0], dilation[1], 1])
    elif _depthwise_multiplier(info) is not None:
        y = tf.nn.depthwise_conv2d(x, weight, strides, mode, dilations=list(dilation))
    else:
        # General groups: TensorFlow's CPU conv2d has no groups, so split.
        xs = tf.split(x, group, axis=3)
        ws = tf.split(weight, group, axis=0)
        y = tf.concat([tf.nn.conv2d(xi, tf.transpose(wi, [2, 3, 1, 0]), strides, mode,
                                    dilations=[1, dilation[0], dilation[1], 1]) for xi, wi in zip(xs, ws)], axis=3)
    if len(params) > 1:
        y = y + params[1]
    ctx.set(layer, 0, y, NHWC)


@builder("Deconvolution")
def deconvolution(ctx, info):
    tf = ctx.tf
    layer, param = info.layer, info.layer.convolution_param
    kernel, stride, pad, dilation = conv_geometry(param, 2)
    if (param.group or 1) != 1 or any(d != 1 for d in dilation):
        raise UnsupportedLayerError(layer.name, "Deconvolution (group/dilation)", "supported by the trainer")
    x = ctx.get_nhwc(layer.bottom[0])
    params = ctx.params(info)
    n, c, h, w = info.output_shapes[0]
    # Caffe's (C_in, C_out, kh, kw) is conv2d_transpose's (kh, kw, C_out, C_in) transposed.
    filt = tf.transpose(params[0], [2, 3, 1, 0])
    full = [tf.shape(x)[0], stride[0] * (info.input_shapes[0][2] - 1) + kernel[0],
            stride[1] * (info.input_shapes[0][3] - 1) + kernel[1], c]
    y = tf.nn.conv2d_transpose(x, filt, tf.stack(full), [1, stride[0], stride[1], 1], "VALID")
    y = y[:, pad[0]:pad[0] + h, pad[1]:pad[1] + w, :]
    if len(params) > 1:
        y = y + params[1]
    ctx.set(layer, 0, y, NHWC)


@builder("InnerProduct")
def inner_product(ctx, info):
    tf = ctx.tf
    layer, param = info.layer, info.layer.inner_product_param
    shape = info.input_shapes[0]
    axis = param.axis + len(shape) if param.axis < 0 else param.axis
    x = ctx.get(layer.bottom[0])
    lead = tf.shape(x)[:axis]
    flat = tf.reshape(x, [-1, int(_count(shape[axis:]))])
    params = ctx.params(info)
    y = tf.matmul(flat, params[0], transpose_b=not param.transpose)
    if len(params) > 1:
        y = y + params[1]
    ctx.set(layer, 0, tf.reshape(y, tf.concat([lead, [param.num_output]], 0)))


def _count(dims):
    total = 1
    for d in dims:
        total *= int(d)
    return total
