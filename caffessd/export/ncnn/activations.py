"""Element-wise activations, Power and Softmax as ncnn layers."""
from __future__ import annotations

from caffessd.export.ncnn.registry import ncnn_axis, writer


@writer("ReLU")
def relu(graph, info):
    slope = float(info.layer.relu_param.negative_slope)
    graph.emit(info, "ReLU", {0: slope} if slope else {})


@writer("ReLU6")
def relu6(graph, info):
    """ncnn has no ReLU6: Clip to [0, 6] (what caffe2ncnn writes)."""
    graph.emit(info, "Clip", {0: 0.0, 1: 6.0})


@writer("PReLU")
def prelu(graph, info):
    slope = info.weights[0].reshape(-1)
    graph.emit(info, "PReLU", {0: int(slope.size)}, [graph.floats(slope)])


@writer("Sigmoid")
def sigmoid(graph, info):
    graph.emit(info, "Sigmoid")


@writer("TanH")
def tanh(graph, info):
    graph.emit(info, "TanH")


@writer("Power")
def power(graph, info):
    """Same formula in both: (shift + scale * x) ^ power."""
    param = info.layer.power_param
    graph.emit(info, "Power", {0: float(param.power), 1: float(param.scale), 2: float(param.shift)})


@writer("Softmax")
def softmax(graph, info):
    """Parameter 1=1 marks the fixed axis handling (older ncnn files without
    it are refused by ncnn for axis != 0)."""
    axis = ncnn_axis(info, int(info.layer.softmax_param.axis), len(info.input_shapes[0]))
    graph.emit(info, "Softmax", {0: axis, 1: 1})
