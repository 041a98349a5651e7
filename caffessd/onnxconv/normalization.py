"""BatchNorm, Scale and SSD's Normalize (L2 norm with a learned scale)."""
from __future__ import annotations

import numpy as np

from caffessd.onnxconv.registry import bottom, emitter


def _broadcastable(array: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """Shape a per-axis parameter so that it lines up with `axis` of an ndim tensor."""
    trailing = ndim - axis - array.ndim
    return array.reshape(array.shape + (1,) * trailing)


@emitter("BatchNorm")
def batch_norm(ctx, info):
    layer, param = info.layer, info.layer.batch_norm_param
    eps = float(param.eps) if param.HasField("eps") else 1e-5
    x = bottom(ctx, info)
    ndim = len(info.input_shapes[0])
    use_global = param.use_global_stats if param.HasField("use_global_stats") else True
    if not use_global:
        _batch_statistics(ctx, layer, x, ndim, eps)
        return
    mean, var, factor_blob = info.weights
    # Caffe stores running sums; the third blob is their weight (0: unscaled).
    factor = 0.0 if float(factor_blob.reshape(-1)[0]) == 0 else 1.0 / float(factor_blob.reshape(-1)[0])
    mean = (mean.reshape(-1).astype(np.float64) * factor).astype(np.float32)
    var = (var.reshape(-1).astype(np.float64) * factor).astype(np.float32)
    channels = mean.size
    ctx.emit_top(layer, "BatchNormalization", [
        x, ctx.initializer(f"{layer.name}_gamma", np.ones(channels, np.float32)),
        ctx.initializer(f"{layer.name}_beta", np.zeros(channels, np.float32)),
        ctx.initializer(f"{layer.name}_mean", mean), ctx.initializer(f"{layer.name}_var", var),
    ], epsilon=eps)


def _batch_statistics(ctx, layer, x, ndim, eps):
    """use_global_stats: false normalises with the statistics of the input itself."""
    axes = [0] + list(range(2, ndim))
    name = layer.name
    mean = ctx.reduce("ReduceMean", x, axes, f"{name}_mean")
    centred = ctx.node("Sub", [x, mean], f"{name}_centred")
    var = ctx.reduce("ReduceMean", ctx.node("Mul", [centred, centred], f"{name}_sq"), axes, f"{name}_var")
    std = ctx.node("Sqrt", [ctx.node("Add", [var, ctx.initializer(f"{name}_eps", np.float32(eps))], f"{name}_var_eps")],
                   f"{name}_std")
    ctx.emit_top(layer, "Div", [centred, std])


@emitter("Scale")
def scale(ctx, info):
    layer, param = info.layer, info.layer.scale_param
    shape = info.input_shapes[0]
    ndim = len(shape)
    axis = param.axis + ndim if param.axis < 0 else param.axis
    x = bottom(ctx, info)
    if len(layer.bottom) > 1:
        # Two-bottom form: the second bottom is the (learned elsewhere) scale.
        factor_shape = info.input_shapes[1]
        factor = ctx.reshape(bottom(ctx, info, 1), list(factor_shape) + [1] * (ndim - axis - len(factor_shape)),
                             f"{layer.name}_factor")
        bias = info.weights[0] if param.bias_term and info.weights else None
        bias_shape = factor_shape
    else:
        weights = info.weights[0]
        factor = ctx.initializer(f"{layer.name}_scale", _broadcastable(weights, axis, ndim))
        bias = info.weights[1] if param.bias_term and len(info.weights) > 1 else None
        bias_shape = weights.shape
    if bias is None:
        ctx.emit_top(layer, "Mul", [x, factor])
        return
    scaled = ctx.node("Mul", [x, factor], f"{layer.name}_mul")
    bias = _broadcastable(bias.reshape(bias_shape), axis, ndim)
    ctx.emit_top(layer, "Add", [scaled, ctx.initializer(f"{layer.name}_bias", bias)])


@emitter("Normalize")
def normalize(ctx, info):
    """x / sqrt(sum(x^2) + eps) * scale, the sum over channels per position
    (or over C,H,W per image with across_spatial); eps goes inside the root,
    as both Caffe-SSD and OpenCV do."""
    layer, param = info.layer, info.layer.norm_param
    ndim = len(info.input_shapes[0])
    across = param.across_spatial if param.HasField("across_spatial") else True
    eps = float(param.eps) if param.HasField("eps") else 1e-10
    x = bottom(ctx, info)
    axes = list(range(1, ndim)) if across else [1]
    sumsq = ctx.reduce("ReduceSumSquare", x, axes, f"{layer.name}_sumsq")
    eps_value = ctx.initializer(f"{layer.name}_eps", np.float32(eps))
    norm = ctx.node("Sqrt", [ctx.node("Add", [sumsq, eps_value], f"{layer.name}_sumsq_eps")], f"{layer.name}_norm")
    unit = ctx.node("Div", [x, norm], f"{layer.name}_unit")
    factor = info.weights[0].reshape(-1)
    if factor.size > 1:
        factor = factor.reshape((-1,) + (1,) * (ndim - 2))
    ctx.emit_top(layer, "Mul", [unit, ctx.initializer(f"{layer.name}_scale", factor)])
