"""A caffemodel initialised from the layer fillers, as Caffe initialises a net before training.

Fillers follow Caffe's definitions (filler.hpp):
- constant: `value`;  uniform: U(min, max);  gaussian: N(mean, std), with
  `sparse` keeping each weight with probability sparse / num_outputs;
- xavier: U(-a, a), a = sqrt(3 / n);  msra: N(0, sqrt(2 / n)); where n is
  fan_in (count / shape[0]), fan_out (count / shape[1]) or their average,
  per `variance_norm`.
Blob shapes come from caffessd's shape inference (Net.walk).

BatchNorm statistics have no filler; Caffe starts them at zero, which in TEST
phase divides each activation by sqrt(eps) (x316 per layer with eps 1e-5) so an
untrained deep net overflows. They are written as mean 0, variance 1, factor 1
by default (identity normalisation; Caffe's first training iteration replaces
them with batch statistics either way). `bn_stats="zero"` writes Caffe's zeros.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional

import numpy as np

from caffessd import caffe_pb2, protoio
from caffessd.errors import CaffessdError, UnsupportedLayerError
from caffessd.net import Net

BN_STATS = ("identity", "zero")


def fill(filler: caffe_pb2.FillerParameter, shape, rng: np.random.Generator) -> np.ndarray:
    """Values for a blob of `shape` drawn as Caffe's filler `filler.type` draws them."""
    shape = tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64))
    kind = filler.type
    if kind == "constant":
        return np.full(shape, filler.value, dtype=np.float32)
    if kind == "uniform":
        return rng.uniform(filler.min, filler.max, shape).astype(np.float32)
    if kind == "gaussian":
        values = rng.normal(filler.mean, filler.std, shape).astype(np.float32)
        if filler.sparse >= 0 and len(shape) >= 1:
            keep = min(1.0, filler.sparse / shape[0])
            values *= rng.random(shape) < keep
        return values
    if kind in ("xavier", "msra"):
        n = _fan(filler, shape, count)
        if kind == "xavier":
            bound = math.sqrt(3.0 / n)
            return rng.uniform(-bound, bound, shape).astype(np.float32)
        return rng.normal(0.0, math.sqrt(2.0 / n), shape).astype(np.float32)
    raise CaffessdError(f"filler type '{kind}' is not supported (use constant, uniform, gaussian, xavier or msra)")


def _fan(filler: caffe_pb2.FillerParameter, shape, count: int) -> float:
    fan_in = count / shape[0]
    fan_out = count / shape[1] if len(shape) > 1 else count
    if filler.variance_norm == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    if filler.variance_norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def _constant(value: float) -> caffe_pb2.FillerParameter:
    filler = caffe_pb2.FillerParameter()
    filler.type = "constant"
    filler.value = value
    return filler


def _layer_fillers(layer: caffe_pb2.LayerParameter) -> List[caffe_pb2.FillerParameter]:
    """The filler of each learnable blob, in blob order (Caffe's defaults where unset)."""
    kind = layer.type
    if kind in ("Convolution", "Deconvolution"):
        return [layer.convolution_param.weight_filler, layer.convolution_param.bias_filler]
    if kind == "InnerProduct":
        return [layer.inner_product_param.weight_filler, layer.inner_product_param.bias_filler]
    if kind == "Scale":
        param = layer.scale_param
        return [param.filler if param.HasField("filler") else _constant(1.0), param.bias_filler]
    if kind == "Bias":
        return [layer.bias_param.filler]
    if kind == "Normalize":
        param = layer.norm_param
        return [param.scale_filler if param.HasField("scale_filler") else _constant(1.0)]
    if kind == "PReLU":
        param = layer.prelu_param
        return [param.filler if param.HasField("filler") else _constant(0.25)]
    raise UnsupportedLayerError(layer.name, kind, "supported by the weight initialiser")


def _bn_blobs(shapes, bn_stats: str) -> List[np.ndarray]:
    mean, var, factor = (np.zeros(s, dtype=np.float32) for s in shapes)
    if bn_stats == "identity":
        var[:] = 1.0
        factor[:] = 1.0
    return [mean, var, factor]


def init_weights(net_param: caffe_pb2.NetParameter, seed: int = 0, bn_stats: str = "identity",
                 progress: Optional[Callable[[str], None]] = None) -> caffe_pb2.NetParameter:
    """A caffemodel for `net_param` (any stage; a deploy net is enough): every
    layer of the net, with blobs drawn from its fillers for those that learn."""
    if bn_stats not in BN_STATS:
        raise CaffessdError(f"bn_stats must be one of {', '.join(BN_STATS)}, got {bn_stats!r}")
    rng = np.random.default_rng(seed)
    model = caffe_pb2.NetParameter()
    model.name = net_param.name
    for info in Net(net_param).walk(with_weights=False):
        layer = model.layer.add()
        layer.CopyFrom(info.layer)
        if not info.param_shapes:
            continue
        if info.type == "BatchNorm":
            arrays = _bn_blobs(info.param_shapes, bn_stats)
        else:
            fillers = _layer_fillers(info.layer)
            arrays = [fill(filler, shape, rng) for filler, shape in zip(fillers, info.param_shapes)]
        for array in arrays:
            protoio.array_to_blob(array, layer.blobs.add())
        if progress is not None:
            progress(info.name)
    return model


def learnable_layer_count(net_param: caffe_pb2.NetParameter) -> int:
    """How many layers `init_weights` fills (for a progress bar)."""
    return sum(1 for info in Net(net_param).walk(with_weights=False) if info.param_shapes)
