"""Convolution (ncnn Convolution, or ConvolutionDepthWise for group > 1),
Deconvolution and InnerProduct.

Caffe's convolution weight (out, in / group, kh, kw) is ncnn's order already.
Deconvolution stores (in, out / group, kh, kw) per group, which ncnn wants as
(out / group, in / group, kh, kw) per group (caffe2ncnn reorders the same way).
"""
from __future__ import annotations

from caffessd.export.ncnn.registry import ncnn_axis, refuse, writer
from caffessd.layers import conv_geometry


def _geometry_params(info) -> dict:
    param = info.layer.convolution_param
    if len(info.input_shapes[0]) != 4:
        raise refuse(info, "ncnn convolutions are 2-d (the input is not N,C,H,W)")
    ncnn_axis(info, int(param.axis), 4)
    if param.axis not in (1, -3):
        raise refuse(info, f"convolution over axis {param.axis}")
    kernel, stride, pad, dilation = (list(map(int, v)) for v in conv_geometry(param, 2))
    return {0: int(param.num_output), 1: kernel[1], 11: kernel[0], 2: dilation[1], 12: dilation[0],
            3: stride[1], 13: stride[0], 4: pad[1], 14: pad[0]}


@writer("Convolution")
def convolution(graph, info):
    _convolution_like(graph, info, "Convolution", info.weights[0])


@writer("Deconvolution")
def deconvolution(graph, info):
    weight = info.weights[0]
    group = int(info.layer.convolution_param.group or 1)
    cin, cout_g = weight.shape[0], weight.shape[1]
    # Caffe stores a deconvolution's weights input-major; ncnn wants them output-major per group.
    ordered = weight.reshape(group, cin // group, cout_g, -1).transpose(0, 2, 1, 3)
    _convolution_like(graph, info, "Deconvolution", ordered)


def _convolution_like(graph, info, kind: str, weight):
    """ncnn's Convolution/Deconvolution layer, or its DepthWise form when grouped."""
    params = _geometry_params(info)
    group = int(info.layer.convolution_param.group or 1)
    params.update({5: int(len(info.weights) > 1), 6: int(weight.size)})
    if group > 1:
        kind, params[7] = f"{kind}DepthWise", group
    buffers = [graph.weights(weight)] + [graph.floats(b) for b in info.weights[1:2]]
    graph.emit(info, kind, params, buffers)


@writer("InnerProduct")
def inner_product(graph, info):
    """ncnn's InnerProduct flattens its whole input, as Caffe's does with axis 1."""
    param = info.layer.inner_product_param
    axis = param.axis + len(info.input_shapes[0]) if param.axis < 0 else param.axis
    if axis != 1:
        raise refuse(info, f"inner product from axis {param.axis} (ncnn flattens everything after the batch)")
    weight = info.weights[0]
    if param.transpose:
        weight = weight.reshape(-1, int(param.num_output)).T
    params = {0: int(param.num_output), 1: int(len(info.weights) > 1), 2: int(weight.size)}
    graph.emit(info, "InnerProduct", params, [graph.weights(weight)] + [graph.floats(b) for b in info.weights[1:2]])
