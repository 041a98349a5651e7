"""BatchNorm (Caffe's training and global-statistics modes), Scale, SSD's Normalize.

Caffe's BatchNorm keeps three blobs: running sums of the mean and of the
variance and their weight (the scale factor). In TRAIN phase (unless
use_global_stats says otherwise) it normalises by the batch's own mean and
biased variance, and updates the blobs as
    factor = maf * factor + 1
    mean_sum = maf * mean_sum + batch_mean
    var_sum  = maf * var_sum + m / (m - 1) * batch_var     (m = N*H*W)
(batch_norm_layer.cpp). The stored statistics are sums / factor.

A BatchNorm followed by its Scale layer runs as one op (`batch_norm_scale`,
planned by caffessd.train.executor.fusion).
"""
from __future__ import annotations

from caffessd.train.executor.context import NCHW, NHWC
from caffessd.train.executor.registry import builder


# Use TensorFlow's fused kernel for NHWC float32 BatchNorm on one replica
# (faster; same arithmetic up to float rounding as the two-pass form).
FUSED = True


def _channel_axis(layout: str, rank: int) -> int:
    return rank - 1 if layout == NHWC else 1


def _per_channel(ctx, vector, layout: str, rank: int):
    """Reshape a (C,) vector to broadcast over the channel axis of a tensor."""
    if layout == NHWC or rank <= 2:
        return vector
    return ctx.tf.reshape(vector, [-1] + [1] * (rank - 2))


def uses_global_stats(layer, training: bool) -> bool:
    param = layer.batch_norm_param
    return param.use_global_stats if param.HasField("use_global_stats") else not training


def _replicas(tf) -> int:
    replica = tf.distribute.get_replica_context()
    return 1 if replica is None else replica.num_replicas_in_sync


def _replica_sum(tf, value):
    """Sum over replicas whose gradient is the replicas' summed upstream gradient
    (every replica's loss depends on every replica's share of the sum)."""
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return value

    @tf.custom_gradient
    def summed(x):
        def grad(upstream):
            return replica.all_reduce(tf.distribute.ReduceOp.SUM, upstream)
        return replica.all_reduce(tf.distribute.ReduceOp.SUM, x), grad
    return summed(value)


def _batch_moments(tf, x, axes, layout, rank, ctx):
    """Mean and biased variance over the batch; with the batch split over
    replicas, over all of it (synchronised), so that a distributed step sees
    the statistics of the single-device batch."""
    count = _replica_sum(tf, tf.cast(tf.size(x) // tf.shape(x)[_channel_axis(layout, rank)], x.dtype))
    mean = _replica_sum(tf, tf.reduce_sum(x, axis=axes)) / count
    centred = x - _per_channel(ctx, mean, layout, rank)
    var = _replica_sum(tf, tf.reduce_sum(tf.square(centred), axis=axes)) / count
    return mean, var


def _moving_average_fraction(param) -> float:
    return float(param.moving_average_fraction) if param.HasField("moving_average_fraction") else 0.999


def _use_kernel(tf, x, layout: str, rank: int) -> bool:
    """TensorFlow's fused batch-norm kernel: NHWC, 4-d, float32, one replica
    (a replicated batch needs the synchronised two-pass statistics)."""
    return FUSED and layout == NHWC and rank == 4 and _replicas(tf) == 1 and x.dtype == tf.float32


def _normalise(ctx, info, factor=None, bias=None):
    """Caffe's BatchNorm of the layer's bottom, then `* factor + bias` per channel
    when a Scale layer's blobs are given. Returns (output, layout)."""
    tf = ctx.tf
    layer, param = info.layer, info.layer.batch_norm_param
    eps = float(param.eps) if param.HasField("eps") else 1e-5
    x, layout = ctx.get_any(layer.bottom[0])
    compute_dtype = x.dtype
    if x.dtype == tf.float16:
        x = tf.cast(x, tf.float32)  # statistics in float32 (mixed precision)
    rank = len(info.input_shapes[0])
    axis = _channel_axis(layout, rank)
    reduce_axes = [a for a in range(rank) if a != axis]
    mean_sum, var_sum, scale_factor = ctx.params(info)
    channels = info.input_shapes[0][1]
    if factor is not None:
        factor = tf.cast(factor, x.dtype)
        bias = tf.zeros([channels], x.dtype) if bias is None else tf.cast(bias, x.dtype)
    global_stats = uses_global_stats(layer, ctx.training)
    if _use_kernel(tf, x, layout, rank):
        # The fused kernel normalises with the biased batch variance, as Caffe
        # does, and returns the Bessel-corrected one, which is exactly Caffe's
        # m/(m-1) * var for the running sum. With global statistics it is the
        # inference form of the same kernel.
        ones = tf.ones([channels], x.dtype) if factor is None else factor
        zeros = tf.zeros([channels], x.dtype) if bias is None else bias
        if global_stats:
            mean, var = _global_moments(tf, mean_sum, var_sum, scale_factor)
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, ones, zeros, mean, var, epsilon=eps, is_training=False)
        else:
            y, mean, corrected = tf.compat.v1.nn.fused_batch_norm(x, ones, zeros, epsilon=eps, is_training=True)
            if ctx.update_stats:
                _update_statistics(ctx, param, (mean_sum, var_sum, scale_factor), mean, corrected)
        return tf.cast(y, compute_dtype), layout
    if global_stats:
        mean, var = _global_moments(tf, mean_sum, var_sum, scale_factor)
    else:
        mean, var = _batch_moments(tf, x, reduce_axes, layout, rank, ctx)
        if ctx.update_stats:
            m = _replica_sum(tf, tf.cast(tf.size(x) // channels, x.dtype))
            correction = tf.where(m > 1, m / tf.maximum(m - 1, 1), 1.0)
            _update_statistics(ctx, param, (mean_sum, var_sum, scale_factor), mean, correction * var)
    y = (x - _per_channel(ctx, mean, layout, rank)) / _per_channel(ctx, tf.sqrt(var + eps), layout, rank)
    if factor is not None:
        y = y * _per_channel(ctx, factor, layout, rank) + _per_channel(ctx, bias, layout, rank)
    return tf.cast(y, compute_dtype), layout


def _global_moments(tf, mean_sum, var_sum, scale_factor):
    """The stored statistics: running sums over their weight (0 when the weight is 0, as Caffe)."""
    scale = tf.where(scale_factor[0] == 0, tf.zeros_like(scale_factor[0]), 1.0 / scale_factor[0])
    return mean_sum * scale, var_sum * scale


def _update_statistics(ctx, param, blobs, batch_mean, unbiased_var):
    """Caffe's running sums: factor = maf * factor + 1, sums = maf * sums + batch value."""
    tf = ctx.tf
    mean_sum, var_sum, scale_factor = blobs
    maf = _moving_average_fraction(param)
    ctx.add_stat_update(scale_factor, scale_factor * maf + 1)
    ctx.add_stat_update(mean_sum, mean_sum * maf + tf.stop_gradient(batch_mean))
    ctx.add_stat_update(var_sum, var_sum * maf + tf.stop_gradient(unbiased_var))


@builder("BatchNorm")
def batch_norm(ctx, info):
    y, layout = _normalise(ctx, info)
    ctx.set(info.layer, 0, y, layout)


def batch_norm_scale(ctx, info, scale_info):
    """A BatchNorm and the Scale layer after it (caffessd.train.executor.fusion)
    as one op: the Scale's float32 blobs are the kernel's scale and offset."""
    blobs = ctx.variables[scale_info.name]
    y, layout = _normalise(ctx, info, blobs[0], blobs[1] if len(blobs) > 1 else None)
    ctx.set(scale_info.layer, 0, y, layout)


@builder("Scale")
def scale(ctx, info):
    tf = ctx.tf
    layer, param = info.layer, info.layer.scale_param
    shape = info.input_shapes[0]
    rank = len(shape)
    axis = param.axis + rank if param.axis < 0 else param.axis
    params = ctx.params(info)
    if len(layer.bottom) > 1 or axis != 1 or (params and params[0].shape.rank != 1):
        # The general form in Caffe's layout.
        x = ctx.get(layer.bottom[0])
        if len(layer.bottom) > 1:
            factor, bias = ctx.get(layer.bottom[1]), (params[0] if params else None)
        else:
            factor, bias = params[0], (params[1] if len(params) > 1 else None)
        trailing = rank - axis - len(factor.shape)
        factor = tf.reshape(factor, list(factor.shape) + [1] * trailing)
        y = x * factor
        if bias is not None:
            y = y + tf.reshape(bias, list(factor.shape))
        ctx.set(layer, 0, y, NCHW)
        return
    x, layout = ctx.get_any(layer.bottom[0])
    y = x * _per_channel(ctx, params[0], layout, rank)
    if len(params) > 1:
        y = y + _per_channel(ctx, params[1], layout, rank)
    ctx.set(layer, 0, y, layout)


@builder("Normalize")
def normalize(ctx, info):
    """x / sqrt(sum(x^2) + eps) * scale (over channels, or C,H,W with across_spatial)."""
    tf = ctx.tf
    layer, param = info.layer, info.layer.norm_param
    across = param.across_spatial if param.HasField("across_spatial") else True
    eps = float(param.eps) if param.HasField("eps") else 1e-10
    x, layout = ctx.get_any(layer.bottom[0])
    rank = len(info.input_shapes[0])
    axes = list(range(1, rank)) if across else [_channel_axis(layout, rank)]
    norm = tf.sqrt(tf.reduce_sum(tf.square(x), axis=axes, keepdims=True) + eps)
    factor = ctx.params(info)[0]
    if param.channel_shared:
        factor = tf.reshape(factor, [])
    else:
        factor = _per_channel(ctx, factor, layout, rank)
    ctx.set(layer, 0, x / norm * factor, layout)
