"""Layers that move or combine data without learned weights: Eltwise, Concat,
Slice, Split, Flatten, Reshape, Permute, Dropout, Crop, Silence.

Shape-changing layers fold when their input is a conversion-time constant
(the PriorBox branch of an SSD head), so DetectionOutput sees the priors.
"""
from __future__ import annotations

import numpy as np

from caffessd import caffe_pb2
from caffessd.layers import permute_order
from caffessd.onnxconv.registry import bottom, emitter


def _axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


def _consts(ctx, info):
    """The bottoms' arrays when every bottom is a constant, else None."""
    arrays = [ctx.const_of(b) for b in info.layer.bottom]
    return arrays if all(a is not None for a in arrays) else None


@emitter("Eltwise")
def eltwise(ctx, info):
    layer, param = info.layer, info.layer.eltwise_param
    inputs = [bottom(ctx, info, i) for i in range(len(layer.bottom))]
    op = param.operation
    if op == caffe_pb2.EltwiseParameter.PROD:
        value = inputs[0]
        for i, other in enumerate(inputs[1:-1], 1):
            value = ctx.node("Mul", [value, other], f"{layer.name}_mul{i}")
        ctx.emit_top(layer, "Mul", [value, inputs[-1]])
    elif op == caffe_pb2.EltwiseParameter.MAX:
        ctx.emit_top(layer, "Max", inputs)
    else:
        coeffs = list(param.coeff) or [1.0] * len(inputs)
        terms = []
        for i, (value, coeff) in enumerate(zip(inputs, coeffs)):
            if coeff != 1:
                value = ctx.node("Mul", [value, ctx.initializer(f"{layer.name}_coeff{i}", np.float32(coeff))],
                                 f"{layer.name}_term{i}")
            terms.append(value)
        ctx.emit_top(layer, "Sum", terms)


@emitter("Concat")
def concat(ctx, info):
    param = info.layer.concat_param
    axis = param.axis if param.HasField("axis") or not param.HasField("concat_dim") else param.concat_dim
    axis = _axis(axis, len(info.input_shapes[0]))
    consts = _consts(ctx, info)
    if consts is not None:
        ctx.bind_const(info.layer, 0, np.concatenate(consts, axis=axis))
        return
    inputs = [bottom(ctx, info, i) for i in range(len(info.layer.bottom))]
    ctx.emit_top(info.layer, "Concat", inputs, axis=axis)


@emitter("Slice")
def slice_layer(ctx, info):
    layer, param = info.layer, info.layer.slice_param
    axis = param.axis if param.HasField("axis") or not param.HasField("slice_dim") else param.slice_dim
    axis = _axis(axis, len(info.input_shapes[0]))
    sizes = [shape[axis] for shape in info.output_shapes]
    const = ctx.const_of(layer.bottom[0])
    if const is not None:
        for i, piece in enumerate(np.split(const, np.cumsum(sizes)[:-1], axis=axis)):
            ctx.bind_const(layer, i, piece)
        return
    names = [ctx.top_name(layer, i) for i in range(len(layer.top))]
    ctx.node("Split", [bottom(ctx, info), ctx.ints(f"{layer.name}_sizes", sizes)], layer.name, outputs=names, axis=axis)
    for i, name in enumerate(names):
        ctx.bind(layer, i, name)


@emitter("Split")
def split(ctx, info):
    for i in range(len(info.layer.top)):
        ctx.alias(info.layer, i, info.layer.bottom[0])


@emitter("Dropout")
def dropout(ctx, info):
    # Inference-time Caffe dropout is the identity (it scales while training).
    ctx.alias(info.layer, 0, info.layer.bottom[0])


def _reshape_to_output(ctx, info):
    const = ctx.const_of(info.layer.bottom[0])
    shape = list(info.output_shapes[0])
    if const is not None:
        ctx.bind_const(info.layer, 0, const.reshape(shape))
        return
    ctx.emit_top(info.layer, "Reshape", [bottom(ctx, info), ctx.ints(f"{info.layer.name}_shape", shape)])


@emitter("Flatten")
def flatten(ctx, info):
    _reshape_to_output(ctx, info)


@emitter("Reshape")
def reshape(ctx, info):
    _reshape_to_output(ctx, info)


@emitter("Permute")
def permute(ctx, info):
    order = permute_order(info.layer.permute_param, len(info.input_shapes[0]))
    const = ctx.const_of(info.layer.bottom[0])
    if const is not None:
        ctx.bind_const(info.layer, 0, np.transpose(const, order))
        return
    if order == sorted(order):
        ctx.alias(info.layer, 0, info.layer.bottom[0])
        return
    ctx.emit_top(info.layer, "Transpose", [bottom(ctx, info)], perm=order)


@emitter("Crop")
def crop(ctx, info):
    layer, param = info.layer, info.layer.crop_param
    source, reference = info.input_shapes[0], info.input_shapes[1]
    axis = _axis(param.axis if param.HasField("axis") else 2, len(source))
    axes = list(range(axis, len(source)))
    offsets = list(param.offset)
    if len(offsets) <= 1:
        offsets = [offsets[0] if offsets else 0] * len(axes)
    starts = [int(o) for o in offsets]
    ends = [int(o) + int(reference[a]) for o, a in zip(offsets, axes)]
    ctx.emit_top(layer, "Slice", [bottom(ctx, info), ctx.ints(f"{layer.name}_starts", starts),
                                  ctx.ints(f"{layer.name}_ends", ends), ctx.ints(f"{layer.name}_axes", axes)])


@emitter("Silence")
def silence(ctx, info):
    """Consumes its bottoms and produces nothing."""
