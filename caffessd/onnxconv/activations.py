"""Element-wise activations, Power and Softmax."""
from __future__ import annotations

import numpy as np

from caffessd.onnxconv.registry import bottom, emit_unary, emitter


@emitter("ReLU")
def relu(ctx, info):
    slope = info.layer.relu_param.negative_slope
    if slope:
        emit_unary(ctx, info, "LeakyRelu", alpha=float(slope))
    else:
        emit_unary(ctx, info, "Relu")


@emitter("ReLU6")
def relu6(ctx, info):
    name = info.layer.name
    ctx.emit_top(info.layer, "Clip", [bottom(ctx, info), ctx.initializer(f"{name}_min", np.float32(0)),
                                      ctx.initializer(f"{name}_max", np.float32(6))])


@emitter("PReLU")
def prelu(ctx, info):
    slope = info.weights[0].reshape(-1)
    ndim = len(info.input_shapes[0])
    if slope.size > 1:  # one slope per channel, broadcast over the spatial axes
        slope = slope.reshape((-1,) + (1,) * (ndim - 2))
    ctx.emit_top(info.layer, "PRelu", [bottom(ctx, info), ctx.initializer(f"{info.layer.name}_slope", slope)])


@emitter("Sigmoid")
def sigmoid(ctx, info):
    emit_unary(ctx, info, "Sigmoid")


@emitter("TanH")
def tanh(ctx, info):
    emit_unary(ctx, info, "Tanh")


@emitter("Softmax")
def softmax(ctx, info):
    axis = info.layer.softmax_param.axis
    emit_unary(ctx, info, "Softmax", axis=int(axis))


@emitter("Power")
def power(ctx, info):
    """y = (shift + scale * x) ^ power, skipping the identity parts."""
    layer, param = info.layer, info.layer.power_param
    value = bottom(ctx, info)
    steps = []
    if param.scale != 1:
        steps.append(("Mul", param.scale))
    if param.shift != 0:
        steps.append(("Add", param.shift))
    if param.power != 1:
        steps.append(("Pow", param.power))
    if not steps:
        ctx.alias(layer, 0, layer.bottom[0])
        return
    for i, (op, constant) in enumerate(steps):
        operand = ctx.initializer(f"{layer.name}_{op.lower()}", np.float32(constant))
        if i == len(steps) - 1:
            ctx.emit_top(layer, op, [value, operand])
        else:
            value = ctx.node(op, [value, operand], f"{layer.name}_{op.lower()}")
