"""Element-wise activations, Power and Softmax (layout-preserving where possible)."""
from __future__ import annotations

from caffessd.train.executor.context import NHWC
from caffessd.train.executor.registry import builder


def _unary(ctx, info, fn):
    x, layout = ctx.get_any(info.layer.bottom[0])
    ctx.set(info.layer, 0, fn(x), layout)


@builder("ReLU")
def relu(ctx, info):
    slope = float(info.layer.relu_param.negative_slope)
    tf = ctx.tf
    _unary(ctx, info, (lambda x: tf.where(x > 0, x, x * slope)) if slope else tf.nn.relu)


@builder("ReLU6")
def relu6(ctx, info):
    _unary(ctx, info, ctx.tf.nn.relu6)


@builder("Sigmoid")
def sigmoid(ctx, info):
    _unary(ctx, info, ctx.tf.sigmoid)


@builder("TanH")
def tanh(ctx, info):
    _unary(ctx, info, ctx.tf.tanh)


@builder("PReLU")
def prelu(ctx, info):
    tf = ctx.tf
    x, layout = ctx.get_any(info.layer.bottom[0])
    slope = ctx.params(info)[0]
    rank = len(info.input_shapes[0])
    if not info.layer.prelu_param.channel_shared and layout != NHWC and rank > 2:
        slope = tf.reshape(slope, [-1] + [1] * (rank - 2))
    elif info.layer.prelu_param.channel_shared:
        slope = tf.reshape(slope, [])
    ctx.set(info.layer, 0, tf.where(x > 0, x, x * slope), layout)


@builder("Power")
def power(ctx, info):
    param = info.layer.power_param
    _unary(ctx, info, lambda x: ctx.tf.pow(param.shift + param.scale * x, param.power) if param.power != 1
           else param.shift + param.scale * x)



@builder("Softmax")
def softmax(ctx, info):
    tf = ctx.tf
    axis = int(info.layer.softmax_param.axis)
    x = ctx.get(info.layer.bottom[0])
    ctx.set(info.layer, 0, tf.nn.softmax(x, axis=axis))
