"""Wrap a converted SSD model so that it takes a raw image, as TF's exported
detection graphs do: callers in C++, Java or JavaScript need no preprocessing.

    image  uint8 [height, width, 3]   any size; BGR (or RGB when asked)
      -> resized to the net's input size (see RESIZES)
      -> channel order of the net, (x - mean) * scale -> the Caffe net
    boxes  float [N, 4]   xmin, ymin, xmax, ymax in the input image's pixels
    scores float [N]      best first
    labels int64 [N]      class ids (0 is the background, never reported)

RESIZES:
- "opencv" (default): cv::resize INTER_LINEAR's fixed-point arithmetic built
  from integer Gather/Mul/Div, as caffessd.image.preprocess.resize_linear does it:
  equal to cv2.resize, so to detect's blob, at any size.
- "onnx": one ONNX Resize, bilinear, half-pixel centres, no anti-aliasing
  (the sampling of cv::resize INTER_LINEAR), rounded half up to whole levels.
  Floating point where OpenCV's 8-bit resize is 11-bit fixed point, so a
  resized pixel can differ from cv2.resize by one level (none at an exact 2x
  shrink). Faster, and every runtime has the operator.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from caffessd.errors import CaffessdError

IMAGE = "image"
OUTPUTS = ("boxes", "scores", "labels")
RESIZES = ("onnx", "opencv")
PREFIX = "image_input/"
COEF_BITS = 11                         # OpenCV's INTER_LINEAR weights: 2048 = 1.0


class _Nodes:
    """Node and constant names under PREFIX, collected in order."""

    def __init__(self):
        self.nodes: List[onnx.NodeProto] = []
        self.constants: List[onnx.TensorProto] = []
        self._count = 0

    def const(self, value, dtype) -> str:
        name = f"{PREFIX}const/{len(self.constants)}"
        self.constants.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def __call__(self, op: str, inputs, output: str = None, **attrs) -> str:
        self._count += 1
        output = output or f"{PREFIX}{op.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op, list(inputs), [output], **attrs))
        return output


def add_image_input(model: onnx.ModelProto, mean: Sequence[float], scale: float, net_rgb: bool = False,
                    image_rgb: bool = False, resize: str = "opencv") -> onnx.ModelProto:
    """A copy of `model` (a full caffessd export with one NCHW input and a
    DetectionOutput output) that takes an HxWx3 uint8 image and returns
    boxes in its pixels, scores and labels."""
    if resize not in RESIZES:
        raise CaffessdError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise CaffessdError("--image-input needs a net with one image input and one DetectionOutput output")
    net_input, detections = graph.input[0], graph.output[0].name
    dims = [d.dim_value for d in net_input.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or dims[2] < 1 or dims[3] < 1:
        raise CaffessdError(f"--image-input needs a 1x3xHxW net input, '{net_input.name}' is {dims}")
    mean = [float(v) for v in mean]
    mean = mean * 3 if len(mean) == 1 else mean

    g = _Nodes()
    resized = (_resize_onnx if resize == "onnx" else _resize_opencv)(g, dims[2], dims[3])  # 1x3xhxw float
    if net_rgb != image_rgb:
        resized = g("Gather", [resized, g.const([2, 1, 0], np.int64)], axis=1)
    centred = g("Sub", [resized, g.const(np.reshape(mean, (1, 3, 1, 1)), np.float32)])
    g("Mul", [centred, g.const(scale, np.float32)], output=net_input.name)
    preprocessing = len(g.nodes)
    _postprocess(g, detections)

    nodes = g.nodes[:preprocessing] + list(graph.node) + g.nodes[preprocessing:]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(g.constants)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, ["height", "width", 3]))
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["detections", 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["detections"]),
        helper.make_tensor_value_info("labels", TensorProto.INT64, ["detections"]),
    ])
    del graph.value_info[:]
    try:
        onnx.checker.check_model(wrapped, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise CaffessdError(f"the image-input model fails onnx.checker: {str(exc).splitlines()[0]}") from None
    return wrapped


def _nchw(g: _Nodes, hwc: str) -> str:
    return g("Transpose", [g("Unsqueeze", [hwc, g.const([0], np.int64)])], perm=[0, 3, 1, 2])


def _resize_onnx(g: _Nodes, height: int, width: int) -> str:
    image = _nchw(g, g("Cast", [IMAGE], to=TensorProto.FLOAT))
    resized = g("Resize", [image, "", "", g.const([1, 3, height, width], np.int64)], mode="linear",
                coordinate_transformation_mode="half_pixel")
    # OpenCV's 8-bit result rounds half up (Round would round half to even).
    return g("Floor", [g("Add", [resized, g.const(0.5, np.float32)])], output=f"{PREFIX}levels")


def _resize_opencv(g: _Nodes, height: int, width: int) -> str:
    """cv::resize INTER_LINEAR on uint8, in its integer arithmetic (mirrors
    caffessd.image.preprocess.resize_linear; an exact 2x shrink needs no special case:
    weights of 1024 each give OpenCV's 2x2 average)."""
    shape = g("Shape", [IMAGE])
    src_h = g("Gather", [shape, g.const(0, np.int64)])
    src_w = g("Gather", [shape, g.const(1, np.int64)])
    top, bottom, b0, b1 = _taps(g, src_h, height, clamp_fraction=False)
    left, right, a0, a1 = _taps(g, src_w, width, clamp_fraction=True)
    shape_w = g.const([1, width, 1], np.int64)
    shape_h = g.const([height, 1, 1], np.int64)
    # [1, w, 3], not [1, w, 1]: onnxruntime broadcasts a middle axis ten times slower.
    a0, a1 = (g("Expand", [g("Reshape", [a, shape_w]), g.const([1, width, 3], np.int64)]) for a in (a0, a1))
    b0, b1 = (g("Reshape", [b, shape_h]) for b in (b0, b1))

    def horizontal(rows):  # weights sum to 2**11; drop 4 bits as OpenCV does
        picked = g("Gather", [IMAGE, rows], axis=0)      # gathered as uint8: only h x w x 3 get cast

        def column(index):
            return g("Cast", [g("Gather", [picked, index], axis=1)], to=TensorProto.INT32)
        mixed = g("Add", [g("Mul", [column(left), a0]), g("Mul", [column(right), a1])])
        return g("Div", [mixed, g.const(16, np.int32)])

    def vertical(row, weight):
        return g("Div", [g("Mul", [row, weight]), g.const(1 << 16, np.int32)])

    mixed = g("Add", [vertical(horizontal(top), b0), vertical(horizontal(bottom), b1)])
    levels = g("Div", [g("Add", [mixed, g.const(2, np.int32)]), g.const(4, np.int32)])
    clipped = g("Clip", [levels, g.const(0, np.int32), g.const(255, np.int32)])
    return g("Cast", [_nchw(g, clipped)], output=f"{PREFIX}levels", to=TensorProto.FLOAT)


def _taps(g: _Nodes, src_size: str, dst_size: int, clamp_fraction: bool):
    """Per output pixel: the two source indices and their 11-bit weights.
    Positions are computed in double and rounded to float as OpenCV does."""
    scale = g("Div", [g("Cast", [src_size], to=TensorProto.DOUBLE), g.const(float(dst_size), np.float64)])
    centres = g.const(np.arange(dst_size, dtype=np.float64) + 0.5, np.float64)
    pos = g("Cast", [g("Sub", [g("Mul", [centres, scale]), g.const(0.5, np.float64)])], to=TensorProto.FLOAT)
    floor = g("Floor", [pos])
    fraction = g("Sub", [pos, floor])
    index = g("Cast", [floor], to=TensorProto.INT64)
    zero, one = g.const(0, np.int64), g.const(1, np.int64)
    last = g("Sub", [src_size, one])
    if clamp_fraction:
        # Columns past either border repeat the edge pixel with weight 1.
        outside = g("Or", [g("Less", [index, zero]), g("GreaterOrEqual", [index, last])])
        fraction = g("Where", [outside, g.const(0.0, np.float32), fraction])
        first = g("Clip", [index, zero, last])
        second = g("Min", [g("Add", [first, one]), last])
    else:
        # Rows are clamped but keep their fraction.
        first = g("Clip", [index, zero, last])
        second = g("Clip", [g("Add", [index, one]), zero, last])
    coef = g.const(float(1 << COEF_BITS), np.float32)
    w1 = g("Cast", [g("Round", [g("Mul", [fraction, coef])])], to=TensorProto.INT32)
    w0 = g("Cast", [g("Round", [g("Mul", [g("Sub", [g.const(1.0, np.float32), fraction]), coef])])],
           to=TensorProto.INT32)
    return first, second, w0, w1


def _postprocess(g: _Nodes, detections: str) -> None:
    rows = g("Reshape", [detections, g.const([-1, 7], np.int64)])
    score, label = g.const(2, np.int64), g.const(1, np.int64)
    # Drop the padding row (all zeros) an empty DetectionOutput gives.
    is_detection = g("Greater", [g("Gather", [rows, score], axis=1), g.const(0.0, np.float32)])
    kept = g("Compress", [rows, is_detection], axis=0)
    g("Gather", [kept, score], output="scores", axis=1)
    g("Cast", [g("Gather", [kept, label], axis=1)], output="labels", to=TensorProto.INT64)
    normalised = g("Slice", [kept, g.const([3], np.int64), g.const([7], np.int64), g.const([1], np.int64)])
    clipped = g("Clip", [normalised, g.const(0.0, np.float32), g.const(1.0, np.float32)])
    height_width = g("Gather", [g("Shape", [IMAGE]), g.const([0, 1], np.int64)])
    whwh = g("Cast", [g("Gather", [height_width, g.const([1, 0, 1, 0], np.int64)])], to=TensorProto.FLOAT)
    g("Mul", [clipped, whwh], output="boxes")
