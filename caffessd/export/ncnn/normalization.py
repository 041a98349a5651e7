"""BatchNorm, Scale, Bias and SSD's Normalize as ncnn layers.

BatchNorm is written natively with Caffe's statistics (running sums divided
by the stored factor, as Caffe does at test time) and its eps; ncnn computes
(x - mean) / sqrt(var + eps) like Caffe. `--fold-bn` folds it into the layer
before instead (caffessd.merge_bn), where that is exact.
A Scale or Bias with one value per channel (axis 1) becomes ncnn's Scale,
which is per channel for every rank ncnn has.
"""
from __future__ import annotations

import numpy as np

from caffessd.export.ncnn.registry import refuse, writer

DEFAULT_BN_EPS = 1e-5        # caffe.proto BatchNormParameter.eps
DEFAULT_NORMALIZE_EPS = 1e-10  # the SSD fork's NormalizeParameter.eps


@writer("BatchNorm")
def batch_norm(graph, info):
    param = info.layer.batch_norm_param
    if param.HasField("use_global_stats") and not param.use_global_stats:
        raise refuse(info, "use_global_stats: false normalises with each batch's own statistics")
    mean, variance, factor = (np.asarray(b, np.float64).reshape(-1) for b in info.weights[:3])
    scale = 0.0 if factor[0] == 0 else 1.0 / factor[0]
    eps = float(param.eps) if param.HasField("eps") else DEFAULT_BN_EPS
    channels = mean.size
    buffers = [graph.floats(np.ones(channels)), graph.floats(mean * scale), graph.floats(variance * scale),
               graph.floats(np.zeros(channels))]
    graph.emit(info, "BatchNorm", {0: int(channels), 1: eps}, buffers)


def _channel_vector(info, values: np.ndarray, what: str) -> np.ndarray:
    channels = int(info.input_shapes[0][1])
    values = np.asarray(values, np.float32).reshape(-1)
    if values.size == 1:
        return np.full(channels, values[0], np.float32)
    if values.size != channels:
        raise refuse(info, f"its {what} is not one value per channel")
    return values


def _per_channel_only(info, axis: int, what: str) -> None:
    rank = len(info.input_shapes[0])
    if len(info.layer.bottom) > 1:
        raise refuse(info, f"the {what} comes from a second input blob")
    if (axis + rank if axis < 0 else axis) != 1:
        raise refuse(info, f"{what} along axis {axis} (ncnn's Scale works per channel)")


@writer("Scale")
def scale(graph, info):
    param = info.layer.scale_param
    _per_channel_only(info, int(param.axis), "scale")
    gamma = _channel_vector(info, info.weights[0], "scale")
    buffers = [graph.floats(gamma)]
    if len(info.weights) > 1:
        buffers.append(graph.floats(_channel_vector(info, info.weights[1], "bias")))
    graph.emit(info, "Scale", {0: int(gamma.size), 1: int(len(buffers) > 1)}, buffers)


@writer("Bias")
def bias(graph, info):
    """ncnn's Bias layer only handles N,C,H,W blobs: a Scale by one with a bias does every rank."""
    _per_channel_only(info, int(info.layer.bias_param.axis), "bias")
    beta = _channel_vector(info, info.weights[0], "bias")
    graph.emit(info, "Scale", {0: int(beta.size), 1: 1}, [graph.floats(np.ones_like(beta)), graph.floats(beta)])


@writer("Normalize")
def normalize(graph, info):
    """x / sqrt(sum(x^2) + eps) * scale: ncnn's eps_mode 0 is Caffe's formula."""
    param = info.layer.norm_param
    if len(info.input_shapes[0]) != 4:
        raise refuse(info, "ncnn's Normalize takes N,C,H,W blobs")
    across_spatial = param.across_spatial if param.HasField("across_spatial") else True
    shared = param.channel_shared if param.HasField("channel_shared") else True
    eps = float(param.eps) if param.HasField("eps") else DEFAULT_NORMALIZE_EPS
    factor = np.asarray(info.weights[0], np.float32).reshape(-1)
    params = {0: int(across_spatial), 1: int(shared), 2: eps, 3: int(factor.size), 4: 1, 9: 0}
    graph.emit(info, "Normalize", params, [graph.floats(factor)])
