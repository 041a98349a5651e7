"""Convolution, Deconvolution and InnerProduct."""
from __future__ import annotations

import numpy as np

from caffessd.layers import conv_geometry
from caffessd.onnxconv.registry import bottom, emitter


def _conv_attrs(param, spatial: int) -> dict:
    kernel, stride, pad, dilation = conv_geometry(param, spatial)
    return dict(kernel_shape=[int(k) for k in kernel], strides=[int(s) for s in stride],
                pads=[int(p) for p in pad] * 2, dilations=[int(d) for d in dilation],
                group=int(param.group or 1))


def _weights_and_bias(ctx, info):
    layer = info.layer
    weight = ctx.initializer(f"{layer.name}_W", info.weights[0])
    inputs = [bottom(ctx, info), weight]
    if len(info.weights) > 1:
        inputs.append(ctx.initializer(f"{layer.name}_B", info.weights[1].reshape(-1)))
    return inputs


@emitter("Convolution")
def convolution(ctx, info):
    spatial = len(info.input_shapes[0]) - 2
    ctx.emit_top(info.layer, "Conv", _weights_and_bias(ctx, info), **_conv_attrs(info.layer.convolution_param, spatial))


@emitter("Deconvolution")
def deconvolution(ctx, info):
    # Caffe's deconvolution weight is (C_in, C_out / group, kh, kw), which is
    # exactly ONNX ConvTranspose's layout; the output size formulas agree when
    # output_padding is 0.
    spatial = len(info.input_shapes[0]) - 2
    ctx.emit_top(info.layer, "ConvTranspose", _weights_and_bias(ctx, info),
                 **_conv_attrs(info.layer.convolution_param, spatial))


@emitter("InnerProduct")
def inner_product(ctx, info):
    layer, param = info.layer, info.layer.inner_product_param
    shape = info.input_shapes[0]
    axis = param.axis + len(shape) if param.axis < 0 else param.axis
    rows = int(np.prod(shape[:axis], dtype=np.int64))
    weight = info.weights[0]
    # Gemm computes A @ B^T with transB=1: Caffe's (N, K) weight as is, or its
    # transposed (K, N) storage when `transpose` is set.
    flat = ctx.reshape(bottom(ctx, info), [rows, -1], f"{layer.name}_2d")
    inputs = [flat, ctx.initializer(f"{layer.name}_W", weight)]
    if len(info.weights) > 1:
        inputs.append(ctx.initializer(f"{layer.name}_B", info.weights[1].reshape(-1)))
    gemm = ctx.node("Gemm", inputs, f"{layer.name}_gemm", transB=0 if param.transpose else 1)
    ctx.emit_top(layer, "Reshape", [gemm, ctx.ints(f"{layer.name}_shape", list(info.output_shapes[0]))])
