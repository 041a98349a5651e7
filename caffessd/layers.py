"""Layer semantics that do not need any arithmetic on data: output shapes,
learnable-parameter shapes and multiply-add counts, per Caffe layer type.

Shapes follow the SSD fork of Caffe (its Reshape() functions), including
Caffe's ceil-mode pooling and the PriorBox/DetectionOutput layouts.
A shape is a tuple of ints; DetectionOutput's row count is data-dependent and
reported as -1.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Sequence, Tuple

from caffessd import caffe_pb2
from caffessd.errors import UnsupportedLayerError

Shape = Tuple[int, ...]

# Layer types that only exist for training or evaluation; deploy graphs drop them.
DATA_LAYER_TYPES = {
    "Data", "AnnotatedData", "ImageData", "HDF5Data", "MemoryData", "DummyData",
    "WindowData", "VideoData", "Python",
}
LOSS_LAYER_TYPES = {
    "MultiBoxLoss", "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss",
    "HingeLoss", "InfogainLoss", "ContrastiveLoss", "Accuracy", "DetectionEvaluate",
    "MultinomialLogisticLoss",
}


# ---------------------------------------------------------------- helpers

def _canonical_axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


def _count(shape: Sequence[int]) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


def conv_geometry(param: caffe_pb2.ConvolutionParameter, spatial_dims: int = 2):
    """(kernel, stride, pad, dilation) as per-spatial-axis lists, resolving Caffe's
    three spellings (repeated fields, *_h/*_w, scalars)."""
    def pick(repeated, h_name, w_name, default):
        if param.HasField(h_name) or param.HasField(w_name):
            return [getattr(param, h_name), getattr(param, w_name)]
        values = list(repeated)
        if not values:
            return [default] * spatial_dims
        if len(values) == 1:
            return values * spatial_dims
        return values

    kernel = pick(param.kernel_size, "kernel_h", "kernel_w", None)
    stride = pick(param.stride, "stride_h", "stride_w", 1)
    pad = pick(param.pad, "pad_h", "pad_w", 0)
    dilation = list(param.dilation) or [1]
    if len(dilation) == 1:
        dilation = dilation * spatial_dims
    return kernel, stride, pad, dilation


def pool_geometry(param: caffe_pb2.PoolingParameter, in_hw: Sequence[int]):
    """(kernel, stride, pad) as [h, w] lists; global pooling covers the input."""
    if param.global_pooling:
        return list(in_hw), [1, 1], [0, 0]
    if param.HasField("kernel_h") or param.HasField("kernel_w"):
        kernel = [param.kernel_h, param.kernel_w]
    else:
        kernel = [param.kernel_size, param.kernel_size]
    if param.HasField("stride_h") or param.HasField("stride_w"):
        stride = [param.stride_h, param.stride_w]
    else:
        stride = [param.stride, param.stride]
    if param.HasField("pad_h") or param.HasField("pad_w"):
        pad = [param.pad_h, param.pad_w]
    else:
        pad = [param.pad, param.pad]
    return kernel, stride, pad


def pooled_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooling output size: ceil mode, but the last window must start
    inside the (left-padded) input."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def expand_aspect_ratios(aspect_ratios: Sequence[float], flip: bool) -> List[float]:
    """PriorBox's aspect ratio list: 1 first, then each new ratio (and 1/r with
    flip), skipping near-duplicates as Caffe does."""
    ratios = [1.0]
    for ratio in aspect_ratios:
        for candidate in ([ratio, 1.0 / ratio] if flip else [ratio]):
            if all(abs(candidate - seen) >= 1e-6 for seen in ratios):
                ratios.append(candidate)
    return ratios


def prior_aspect_ratios(param: caffe_pb2.PriorBoxParameter) -> List[float]:
    return expand_aspect_ratios(param.aspect_ratio, param.flip)


def priors_per_cell(param: caffe_pb2.PriorBoxParameter) -> int:
    return len(prior_aspect_ratios(param)) * len(param.min_size) + len(param.max_size)


# ---------------------------------------------------------------- output shapes

def _same(layer, inputs):
    return [inputs[0]] * max(1, len(layer.top))


def _conv_spatial(param, spatial, transposed: bool) -> List[int]:
    """Output sizes per spatial axis; Deconvolution inverts Convolution's formula."""
    kernel, stride, pad, dilation = conv_geometry(param, len(spatial))
    out = []
    for size, k, s, p, d in zip(spatial, kernel, stride, pad, dilation):
        extent = d * (k - 1) + 1
        out.append(s * (size - 1) + extent - 2 * p if transposed else (size + 2 * p - extent) // s + 1)
    return out


def _convolution(layer, inputs):
    n, _, *spatial = inputs[0]
    return [(n, layer.convolution_param.num_output, *_conv_spatial(layer.convolution_param, spatial, False))]


def _deconvolution(layer, inputs):
    n, _, *spatial = inputs[0]
    return [(n, layer.convolution_param.num_output, *_conv_spatial(layer.convolution_param, spatial, True))]


def _pooling(layer, inputs):
    n, c, h, w = inputs[0]
    kernel, stride, pad = pool_geometry(layer.pooling_param, (h, w))
    if layer.pooling_param.global_pooling:
        return [(n, c, 1, 1)]
    return [(n, c, pooled_size(h, kernel[0], stride[0], pad[0]),
             pooled_size(w, kernel[1], stride[1], pad[1]))]


def _inner_product(layer, inputs):
    param = layer.inner_product_param
    shape = inputs[0]
    axis = _canonical_axis(param.axis, len(shape))
    return [tuple(shape[:axis]) + (param.num_output,)]


def _concat(layer, inputs):
    param = layer.concat_param
    axis = param.axis if param.HasField("axis") or not param.HasField("concat_dim") else param.concat_dim
    axis = _canonical_axis(axis, len(inputs[0]))
    out = list(inputs[0])
    out[axis] = sum(shape[axis] for shape in inputs)
    return [tuple(out)]


def _slice(layer, inputs):
    param = layer.slice_param
    shape = list(inputs[0])
    axis = param.axis if param.HasField("axis") or not param.HasField("slice_dim") else param.slice_dim
    axis = _canonical_axis(axis, len(shape))
    points = list(param.slice_point)
    if points:
        bounds = [0] + points + [shape[axis]]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    else:
        parts = len(layer.top)
        if shape[axis] % parts:
            raise ValueError(f"Slice '{layer.name}': axis size {shape[axis]} not divisible into {parts} tops")
        sizes = [shape[axis] // parts] * parts
    outs = []
    for size in sizes:
        piece = list(shape)
        piece[axis] = size
        outs.append(tuple(piece))
    return outs


def _split(layer, inputs):
    return [inputs[0]] * len(layer.top)


def _flatten(layer, inputs):
    shape = inputs[0]
    param = layer.flatten_param
    start = _canonical_axis(param.axis, len(shape))
    end = _canonical_axis(param.end_axis, len(shape))
    return [tuple(shape[:start]) + (_count(shape[start:end + 1]),) + tuple(shape[end + 1:])]


def _reshape(layer, inputs):
    shape = list(inputs[0])
    param = layer.reshape_param
    start = _canonical_axis(param.axis, len(shape) + 1) if param.axis < 0 else param.axis
    end = len(shape) if param.num_axes == -1 else start + param.num_axes
    replaced = shape[start:end]
    new = []
    for i, dim in enumerate(param.shape.dim):
        new.append(replaced[i] if dim == 0 else int(dim))
    out = shape[:start] + new + shape[end:]
    if -1 in out:
        known = _count([d for d in out if d != -1])
        out[out.index(-1)] = _count(shape) // known
    return [tuple(out)]


def _permute(layer, inputs):
    shape = inputs[0]
    order = permute_order(layer.permute_param, len(shape))
    return [tuple(shape[i] for i in order)]


def permute_order(param: caffe_pb2.PermuteParameter, ndim: int) -> List[int]:
    order = [int(i) for i in param.order]
    return order + [i for i in range(ndim) if i not in order]


def _crop(layer, inputs):
    source, reference = inputs[0], inputs[1]
    axis = _canonical_axis(layer.crop_param.axis, len(source))
    return [tuple(source[:axis]) + tuple(reference[axis:])]


def _prior_box(layer, inputs):
    feature = inputs[0]
    height, width = feature[2], feature[3]
    return [(1, 2, height * width * priors_per_cell(layer.prior_box_param) * 4)]


def _detection_output(layer, inputs):
    return [(1, 1, -1, 7)]


def _softmax_like(layer, inputs):
    return [inputs[0]]


def _input(layer, inputs):
    shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
    if len(shapes) == 1:
        shapes = shapes * len(layer.top)
    return shapes


def _silence(layer, inputs):
    return []


def _scalar(layer, inputs):
    return [()] * len(layer.top)


def _data(layer, inputs):
    """Train/test data layers: an image batch and, for SSD, a label blob."""
    batch = 1
    if layer.HasField("data_param"):
        batch = layer.data_param.batch_size or 1
    height = width = 0
    resize = layer.transform_param.resize_param
    if resize.height and resize.width:
        height, width = resize.height, resize.width
    elif layer.transform_param.crop_size:
        height = width = layer.transform_param.crop_size
    shapes = [(batch, 3, height, width)]
    if len(layer.top) > 1:
        shapes.append((1, 1, -1, 8))  # SSD label: one row per ground-truth box
    return shapes


def _argmax(layer, inputs):
    param = layer.argmax_param
    shape = list(inputs[0])
    if param.HasField("axis"):
        shape[_canonical_axis(param.axis, len(shape))] = param.top_k
        return [tuple(shape)]
    return [(shape[0], 2 if param.out_max_val else 1, param.top_k)]


def _eltwise(layer, inputs):
    return [inputs[0]]


def _tile(layer, inputs):
    shape = list(inputs[0])
    axis = _canonical_axis(layer.tile_param.axis, len(shape))
    shape[axis] *= layer.tile_param.tiles
    return [tuple(shape)]


def _reduction(layer, inputs):
    axis = _canonical_axis(layer.reduction_param.axis, len(inputs[0]))
    return [tuple(inputs[0][:axis])]


_OUTPUT_SHAPES: Dict[str, Callable] = {
    "Convolution": _convolution,
    "Deconvolution": _deconvolution,
    "Pooling": _pooling,
    "InnerProduct": _inner_product,
    "Concat": _concat,
    "Slice": _slice,
    "Split": _split,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Permute": _permute,
    "Crop": _crop,
    "PriorBox": _prior_box,
    "DetectionOutput": _detection_output,
    "Softmax": _softmax_like,
    "Input": _input,
    "Silence": _silence,
    "Eltwise": _eltwise,
    "ArgMax": _argmax,
    "Tile": _tile,
    "Reduction": _reduction,
}
for _name in ("ReLU", "ReLU6", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power",
              "Exp", "Log", "Threshold", "Dropout", "BatchNorm", "Scale", "Bias", "Normalize",
              "LRN", "MVN"):
    _OUTPUT_SHAPES[_name] = _same
for _name in DATA_LAYER_TYPES:
    _OUTPUT_SHAPES[_name] = _data
for _name in LOSS_LAYER_TYPES:
    _OUTPUT_SHAPES[_name] = _scalar
_OUTPUT_SHAPES["DetectionEvaluate"] = lambda layer, inputs: [(1, 1, -1, 5)]


def output_shapes(layer: caffe_pb2.LayerParameter, inputs: List[Shape]) -> List[Shape]:
    handler = _OUTPUT_SHAPES.get(layer.type)
    if handler is None:
        raise UnsupportedLayerError(layer.name, layer.type, "known to caffessd's shape inference")
    return [tuple(int(d) for d in s) for s in handler(layer, inputs)]


# ---------------------------------------------------------------- parameters

def param_shapes(layer: caffe_pb2.LayerParameter, inputs: List[Shape]) -> List[Shape]:
    """Shapes of the learnable blobs Caffe stores for `layer` (in blob order)."""
    kind = layer.type
    if kind in ("Convolution", "Deconvolution"):
        param = layer.convolution_param
        channels = inputs[0][1]
        kernel, _, _, _ = conv_geometry(param, len(inputs[0]) - 2)
        group = param.group or 1
        if kind == "Convolution":
            weight = (param.num_output, channels // group, *kernel)
        else:
            weight = (channels, param.num_output // group, *kernel)
        return [weight] + ([(param.num_output,)] if param.bias_term else [])
    if kind == "InnerProduct":
        param = layer.inner_product_param
        axis = _canonical_axis(param.axis, len(inputs[0]))
        fan_in = _count(inputs[0][axis:])
        weight = (fan_in, param.num_output) if param.transpose else (param.num_output, fan_in)
        return [weight] + ([(param.num_output,)] if param.bias_term else [])
    if kind == "BatchNorm":
        channels = inputs[0][1]
        return [(channels,), (channels,), (1,)]
    if kind in ("Scale", "Bias"):
        if len(inputs) > 1:
            return [(inputs[0][1],)] if kind == "Scale" and layer.scale_param.bias_term else []
        param = layer.scale_param if kind == "Scale" else layer.bias_param
        axis = _canonical_axis(param.axis, len(inputs[0]))
        end = len(inputs[0]) if param.num_axes == -1 else axis + param.num_axes
        shape = tuple(inputs[0][axis:end])
        if kind == "Scale" and layer.scale_param.bias_term:
            return [shape, shape]
        return [shape]
    if kind == "Normalize":
        channels = inputs[0][1]
        return [(1,)] if layer.norm_param.channel_shared else [(channels,)]
    if kind == "PReLU":
        return [(1,)] if layer.prelu_param.channel_shared else [(inputs[0][1],)]
    return []


def multiply_adds(layer: caffe_pb2.LayerParameter, inputs: List[Shape], outputs: List[Shape]) -> int:
    """Multiply-accumulate count of the layers that dominate cost (conv, deconv, fc)."""
    kind = layer.type
    if kind == "Convolution":
        param = layer.convolution_param
        kernel, _, _, _ = conv_geometry(param, len(inputs[0]) - 2)
        per_output = (inputs[0][1] // (param.group or 1)) * _count(kernel)
        return _count(outputs[0]) * per_output
    if kind == "Deconvolution":
        param = layer.convolution_param
        kernel, _, _, _ = conv_geometry(param, len(inputs[0]) - 2)
        per_input = (param.num_output // (param.group or 1)) * _count(kernel)
        return _count(inputs[0]) * per_input
    if kind == "InnerProduct":
        weight = param_shapes(layer, inputs)[0]
        return _count(weight) * _count(inputs[0][:_canonical_axis(layer.inner_product_param.axis, len(inputs[0]))])
    return 0
