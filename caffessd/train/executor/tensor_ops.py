"""Layers that move or combine data: Eltwise, Concat, Slice, Split, Flatten,
Reshape, Permute, Crop, Silence, and Dropout. All but Eltwise, channel Concat
and Dropout work in
Caffe's NCHW order (their meaning is defined on Caffe's memory layout)."""
from __future__ import annotations

from caffessd import caffe_pb2
from caffessd.layers import permute_order
from caffessd.train.executor.context import NHWC
from caffessd.train.executor.registry import builder


def _axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


def _same_layout(ctx, blobs):
    """The blobs in the first one's layout (element-wise layers do not care which)."""
    _, layout = ctx.get_any(blobs[0])
    getter = ctx.get_nhwc if layout == NHWC else ctx.get
    return [getter(b) for b in blobs], layout


@builder("Eltwise")
def eltwise(ctx, info):
    tf = ctx.tf
    layer, param = info.layer, info.layer.eltwise_param
    inputs, layout = _same_layout(ctx, list(layer.bottom))
    op = param.operation
    if op == caffe_pb2.EltwiseParameter.PROD:
        y = inputs[0]
        for other in inputs[1:]:
            y = y * other
    elif op == caffe_pb2.EltwiseParameter.MAX:
        y = inputs[0]
        for other in inputs[1:]:
            y = tf.maximum(y, other)
    else:
        coeffs = list(param.coeff) or [1.0] * len(inputs)
        y = tf.add_n([x if k == 1 else x * k for x, k in zip(inputs, coeffs)])
    ctx.set(layer, 0, y, layout)


@builder("Concat")
def concat(ctx, info):
    tf = ctx.tf
    param = info.layer.concat_param
    rank = len(info.input_shapes[0])
    axis = param.axis if param.HasField("axis") or not param.HasField("concat_dim") else param.concat_dim
    axis = _axis(axis, rank)
    if rank == 4 and axis == 1 and all(ctx.get_any(b)[1] == NHWC for b in info.layer.bottom):
        ctx.set(info.layer, 0, tf.concat([ctx.get_nhwc(b) for b in info.layer.bottom], axis=3), NHWC)
        return
    ctx.set(info.layer, 0, tf.concat([ctx.get(b) for b in info.layer.bottom], axis=axis))


@builder("Slice")
def slice_layer(ctx, info):
    layer, param = info.layer, info.layer.slice_param
    axis = param.axis if param.HasField("axis") or not param.HasField("slice_dim") else param.slice_dim
    axis = _axis(axis, len(info.input_shapes[0]))
    sizes = [shape[axis] for shape in info.output_shapes]
    for i, piece in enumerate(ctx.tf.split(ctx.get(layer.bottom[0]), sizes, axis=axis)):
        ctx.set(layer, i, piece)


@builder("Split")
def split(ctx, info):
    tensor, layout = ctx.get_any(info.layer.bottom[0])
    for i in range(len(info.layer.top)):
        ctx.set(info.layer, i, tensor, layout)


def _reshape_to_output(ctx, info):
    shape = list(info.output_shapes[0])
    shape[0] = -1  # the batch follows the input (a distributed replica sees part of it)
    ctx.set(info.layer, 0, ctx.tf.reshape(ctx.get(info.layer.bottom[0]), shape))


@builder("Flatten")
def flatten(ctx, info):
    _reshape_to_output(ctx, info)


@builder("Reshape")
def reshape(ctx, info):
    _reshape_to_output(ctx, info)


@builder("Permute")
def permute(ctx, info):
    order = permute_order(info.layer.permute_param, len(info.input_shapes[0]))
    tensor, layout = ctx.get_any(info.layer.bottom[0])
    if layout == NHWC and order == [0, 2, 3, 1]:
        ctx.set(info.layer, 0, tensor)  # NCHW permuted to NHWC is the NHWC tensor itself
        return
    ctx.set(info.layer, 0, ctx.tf.transpose(ctx.get(info.layer.bottom[0]), order))


@builder("Crop")
def crop(ctx, info):
    layer, param = info.layer, info.layer.crop_param
    source, reference = info.input_shapes[0], info.input_shapes[1]
    axis = _axis(param.axis if param.HasField("axis") else 2, len(source))
    offsets = list(param.offset) or [0]
    if len(offsets) == 1:
        offsets = offsets * (len(source) - axis)
    x = ctx.get(layer.bottom[0])
    index = [slice(None)] * axis + [slice(o, o + reference[a]) for o, a in zip(offsets, range(axis, len(source)))]
    ctx.set(layer, 0, x[tuple(index)])


@builder("Silence")
def silence(ctx, info):
    """Consumes its bottoms, produces nothing."""


@builder("Dropout")
def dropout(ctx, info):
    """Caffe scales kept activations by 1/(1-ratio) while training; identity at test."""
    x, layout = ctx.get_any(info.layer.bottom[0])
    ratio = float(info.layer.dropout_param.dropout_ratio)
    if ctx.training and ratio:
        x = ctx.tf.nn.dropout(x, rate=ratio)
    ctx.set(info.layer, 0, x, layout)
