"""Pooling with Caffe's output size and average-pool divisor.

Caffe sizes pooling outputs in ceil mode but drops a last window that would
start in the right padding. ONNX's ceil_mode does not promise that rule, so
the converter pads explicitly: `pad` cells on the left and whatever the right
side needs for the floor-mode formula to give Caffe's size.

For AVE pooling Caffe divides by the number of window cells that lie inside
the input *plus its declared padding*, never beyond it. That is reproduced by
padding the input with zeros for real (those cells count) and letting
AveragePool(count_include_pad=0) ignore the extra right-side cells.
"""
from __future__ import annotations

from caffessd import caffe_pb2
from caffessd.errors import UnsupportedLayerError
from caffessd.layers import pool_geometry, pooled_size
from caffessd.onnxconv.registry import bottom, emit_unary, emitter


def _extra_right(size: int, kernel: int, stride: int, left: int, out: int) -> int:
    """Right padding after `left` so that floor mode yields at least `out` windows."""
    return max(0, (out - 1) * stride + kernel - size - left)


@emitter("Pooling")
def pooling(ctx, info):
    layer, param = info.layer, info.layer.pooling_param
    method = param.pool
    if method not in (caffe_pb2.PoolingParameter.MAX, caffe_pb2.PoolingParameter.AVE):
        raise UnsupportedLayerError(layer.name, "Pooling (STOCHASTIC)", "supported by the ONNX converter")
    n, c, h, w = info.input_shapes[0]
    if param.global_pooling:
        emit_unary(ctx, info, "GlobalMaxPool" if method == caffe_pb2.PoolingParameter.MAX else "GlobalAveragePool")
        return
    kernel, stride, pad = pool_geometry(param, (h, w))
    out = [pooled_size(h, kernel[0], stride[0], pad[0]), pooled_size(w, kernel[1], stride[1], pad[1])]
    x = bottom(ctx, info)
    if method == caffe_pb2.PoolingParameter.MAX:
        extra = [_extra_right(s, k, st, p, o) for s, k, st, p, o in zip((h, w), kernel, stride, pad, out)]
        op, attrs = "MaxPool", dict(pads=list(pad) + extra)
    else:
        if any(pad):
            zeros = ctx.ints(f"{layer.name}_pads", [0, 0, pad[0], pad[1], 0, 0, pad[0], pad[1]])
            x = ctx.node("Pad", [x, zeros], f"{layer.name}_padded", mode="constant")
        extra = [_extra_right(s + 2 * p, k, st, 0, o) for s, k, st, p, o in zip((h, w), kernel, stride, pad, out)]
        op, attrs = "AveragePool", dict(pads=[0, 0] + extra, count_include_pad=0)
    attrs.update(kernel_shape=list(kernel), strides=list(stride))
    # Floor mode over the padded extent gives one window more than Caffe when
    # Caffe dropped a window starting in the padding; cut it off.
    produced = [(s + 2 * p + e - k) // st + 1 for s, p, e, k, st in zip((h, w), pad, extra, kernel, stride)]
    if produced == out:
        ctx.emit_top(layer, op, [x], **attrs)
        return
    pooled = ctx.node(op, [x], f"{layer.name}_pool", **attrs)
    ctx.emit_top(layer, "Slice", [pooled, ctx.ints(f"{layer.name}_s", [0, 0]),
                                  ctx.ints(f"{layer.name}_e", out), ctx.ints(f"{layer.name}_a", [2, 3])])
