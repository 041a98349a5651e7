"""Pooling as ncnn's Pooling layer.

Caffe sizes its output in ceil mode, except that the last window must start
inside the (left-padded) input. ncnn's pad_mode 0 ("full padding") is plain
ceil mode, so where Caffe drops that last window the exporter switches to
explicit padding (pad_mode 1) sized to Caffe's output instead.

Average pooling: Caffe divides by the window clipped to the padded input
(explicit padding counts, the ceil-mode overhang does not). ncnn either
excludes all padding (avgpool_count_include_pad 0) or counts the whole
kernel (1). The first is Caffe's arithmetic when there is no explicit
padding, the second when no window overhangs the padded input; a layer with
both is refused.
"""
from __future__ import annotations

from caffessd import caffe_pb2
from caffessd.export.ncnn.registry import refuse, writer
from caffessd.layers import pool_geometry, pooled_size

MAX, AVE = caffe_pb2.PoolingParameter.MAX, caffe_pb2.PoolingParameter.AVE


@writer("Pooling")
def pooling(graph, info):
    param = info.layer.pooling_param
    if param.pool not in (MAX, AVE):
        raise refuse(info, "only MAX and AVE pooling exist in ncnn")
    if len(info.input_shapes[0]) != 4:
        raise refuse(info, "ncnn pooling is 2-d (the input is not N,C,H,W)")
    kind = 0 if param.pool == MAX else 1
    in_hw = info.input_shapes[0][2:4]
    if param.global_pooling:
        # Adaptive 1x1 pooling keeps the N,C,1,1 shape Caffe gives (ncnn's
        # global pooling would make a flat blob).
        graph.emit(info, "Pooling", {0: kind, 7: 1, 8: 1, 18: 1})
        return
    kernel, stride, pad = pool_geometry(param, in_hw)
    params = {0: kind, 1: int(kernel[1]), 11: int(kernel[0]), 2: int(stride[1]), 12: int(stride[0]),
              3: int(pad[1]), 13: int(pad[0])}
    overhang = []
    for axis in (0, 1):   # h, w
        size, k, s, p = int(in_hw[axis]), int(kernel[axis]), int(stride[axis]), int(pad[axis])
        caffe_out = pooled_size(size, k, s, p)
        ceil_out = -(-(size + 2 * p - k) // s) + 1
        beyond = (caffe_out - 1) * s + k - (size + 2 * p)   # how far the last window passes the padded input
        overhang.append(beyond > 0)
        if caffe_out != ceil_out:
            # Explicit right/bottom padding giving Caffe's count (never negative:
            # a shorter padding that still floors to it is as good).
            right = max(0, p + beyond)
            if (size + p + right - k) // s + 1 != caffe_out:
                raise refuse(info, "no ncnn padding gives Caffe's output size")
            params[5] = 1
            params[14 if axis == 1 else 15] = right
    if params.get(5) == 1:
        params.setdefault(14, int(pad[1]))
        params.setdefault(15, int(pad[0]))
    if kind == 1 and any(pad):
        if any(overhang):
            raise refuse(info, "average pooling with both padding and a ceil-mode overhang counts windows "
                               "differently in ncnn")
        params[6] = 1
    graph.emit(info, "Pooling", params)
