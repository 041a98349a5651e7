"""MAX pooling for the TFLite graph: Caffe's padding by edge replication.

The executor pads MAX pooling with -inf, which is exact in float but, once
quantized, stretches the padded tensor's int8 range to ~1e36 (every value
of it then rounds to one level, and XNNPACK refuses the model). Replicating
the edge cells is exact too: Caffe keeps pad < kernel and starts its last
window inside the input, so every window that reaches a padded cell also
covers the edge cell it copies, and the maximum is unchanged. The copies
share the input's quantization. AVE and global pooling stay the executor's.
"""
from __future__ import annotations

from caffessd import caffe_pb2
from caffessd.layers import pool_geometry, pooled_size
from caffessd.train.executor.context import NHWC

MAX = caffe_pb2.PoolingParameter.MAX


def _replicate_edges(tf, x, axis: int, before: int, after: int):
    if not before and not after:
        return x
    size = x.shape[axis]
    first = tf.gather(x, [0] * before, axis=axis) if before else None
    last = tf.gather(x, [size - 1] * after, axis=axis) if after else None
    return tf.concat([t for t in (first, x, last) if t is not None], axis=axis)


def pooling(ctx, info, fallback):
    """The Pooling builder for TFLite; `fallback` is the executor's."""
    param = info.layer.pooling_param
    if param.pool != MAX or param.global_pooling:
        return fallback(ctx, info)
    tf = ctx.tf
    n, c, h, w = info.input_shapes[0]
    kernel, stride, pad = pool_geometry(param, (h, w))
    out = [pooled_size(h, kernel[0], stride[0], pad[0]), pooled_size(w, kernel[1], stride[1], pad[1])]
    extra = [max(0, (o - 1) * s + k - size - 2 * p) for o, s, k, size, p in zip(out, stride, kernel, (h, w), pad)]
    x = ctx.get_nhwc(info.layer.bottom[0])
    x = _replicate_edges(tf, x, 1, pad[0], pad[0] + extra[0])
    x = _replicate_edges(tf, x, 2, pad[1], pad[1] + extra[1])
    y = tf.nn.max_pool2d(x, [1, kernel[0], kernel[1], 1], [1, stride[0], stride[1], 1], "VALID")
    ctx.set(info.layer, 0, y[:, :out[0], :out[1], :], NHWC)
