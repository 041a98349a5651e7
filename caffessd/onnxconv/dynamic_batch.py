"""A full SSD model that takes any number of images per run.

The converter unrolls DetectionOutput per image, so a batch size must be
known when converting (`export-onnx --batch N`). For a batch axis left open
(`--batch dynamic`) the one-image graph becomes the body of an ONNX Loop
that runs once per image of the [N, C, H, W] input:

    data [N, C, H, W] -> Loop i < N:  rows_i = one-image graph(data[i:i+1])
                                      column 0 of rows_i := i
                                      rows  = concat(rows, rows_i)
    detection_out [1, 1, K, 7]        every image's rows, image index in column 0

Each image's rows are those of the one-image model (its all-zero row when it
finds nothing included), bit for bit: the body is that model's graph. The
layout is the one of a fixed-batch export, so caffessd.inference.batching
splits the rows on column 0 either way.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from caffessd.errors import CaffessdError

PREFIX = "dynamic_batch/"
BATCH_AXIS = "batch"
IMAGE = f"{PREFIX}image"                # the Loop's slice of the input: one image
IMAGE_ROWS = f"{PREFIX}detections"      # the one-image graph's output inside the Loop


def with_dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` (a full one-image caffessd export: one NCHW input,
    one DetectionOutput output) whose input takes any number of images."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise CaffessdError("a dynamic batch needs a model with one image input and one detection output "
                            "(not --raw, not --image-input)")
    image_input, detections = graph.input[0], graph.output[0]
    dims = [d.dim_value or d.dim_param for d in image_input.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[0] != 1:
        raise CaffessdError(f"a dynamic batch needs a one-image NCHW input; '{image_input.name}' is {dims}")

    body = _loop_body(graph, image_input.name, detections.name)
    outer = [
        helper.make_node("Shape", [image_input.name], [f"{PREFIX}count"], start=0, end=1),
        helper.make_node("Squeeze", [f"{PREFIX}count"], [f"{PREFIX}trips"]),
        helper.make_node("Loop", [f"{PREFIX}trips", "", f"{PREFIX}no_rows"], [f"{PREFIX}all_rows"], body=body),
        helper.make_node("Reshape", [f"{PREFIX}all_rows", f"{PREFIX}out_shape"], [detections.name]),
    ]
    constants = [numpy_helper.from_array(np.zeros((0, 7), np.float32), f"{PREFIX}no_rows"),
                 numpy_helper.from_array(np.array([1, 1, -1, 7], np.int64), f"{PREFIX}out_shape")]
    output = helper.make_tensor_value_info(detections.name, TensorProto.FLOAT, [1, 1, "detections", 7])
    wrapped = helper.make_graph(outer, graph.name, [_with_batch_dim(image_input, BATCH_AXIS)], [output],
                                initializer=constants)
    result = _with_graph(model, wrapped)
    onnx.checker.check_model(result, full_check=True)
    return result


def _loop_body(graph: onnx.GraphProto, input_name: str, detections: str) -> onnx.GraphProto:
    """The Loop body: slice image i, run the one-image graph on it, stamp i
    into column 0 of its rows and append them to the rows so far."""
    step, cond_in, rows_in = f"{PREFIX}i", f"{PREFIX}cond_in", f"{PREFIX}rows_in"
    nodes = [
        helper.make_node("Unsqueeze", [step, f"{PREFIX}axis0"], [f"{PREFIX}start"]),
        helper.make_node("Add", [f"{PREFIX}start", f"{PREFIX}one"], [f"{PREFIX}end"]),
        helper.make_node("Slice", [input_name, f"{PREFIX}start", f"{PREFIX}end", f"{PREFIX}axis0"], [IMAGE]),
    ]
    # The one-image graph, reading the slice where it read the input. Its
    # input and output are renamed: the graph around the Loop holds those
    # names, and a body should not define them again.
    nodes += _renamed(graph.node, {input_name: IMAGE, detections: IMAGE_ROWS})
    image_rows = f"{PREFIX}image_rows"
    nodes += [
        helper.make_node("Reshape", [IMAGE_ROWS, f"{PREFIX}row_shape"], [image_rows]),
        helper.make_node("Shape", [image_rows], [f"{PREFIX}row_count"], start=0, end=1),
        helper.make_node("Concat", [f"{PREFIX}row_count", f"{PREFIX}one"], [f"{PREFIX}index_shape"], axis=0),
        helper.make_node("Cast", [step], [f"{PREFIX}index"], to=TensorProto.FLOAT),
        helper.make_node("Expand", [f"{PREFIX}index", f"{PREFIX}index_shape"], [f"{PREFIX}index_column"]),
        helper.make_node("Slice", [image_rows, f"{PREFIX}one", f"{PREFIX}seven", f"{PREFIX}one"],
                         [f"{PREFIX}rest_columns"]),
        helper.make_node("Concat", [f"{PREFIX}index_column", f"{PREFIX}rest_columns"], [f"{PREFIX}stamped"],
                         axis=1),
        helper.make_node("Concat", [rows_in, f"{PREFIX}stamped"], [f"{PREFIX}rows_out"], axis=0),
        helper.make_node("Identity", [cond_in], [f"{PREFIX}cond_out"]),
    ]
    constants = list(graph.initializer) + [
        numpy_helper.from_array(np.array([0], np.int64), f"{PREFIX}axis0"),
        numpy_helper.from_array(np.array([1], np.int64), f"{PREFIX}one"),
        numpy_helper.from_array(np.array([7], np.int64), f"{PREFIX}seven"),
        numpy_helper.from_array(np.array([-1, 7], np.int64), f"{PREFIX}row_shape"),
    ]
    inputs = [helper.make_tensor_value_info(step, TensorProto.INT64, []),
              helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
              helper.make_tensor_value_info(rows_in, TensorProto.FLOAT, [None, 7])]
    outputs = [helper.make_tensor_value_info(f"{PREFIX}cond_out", TensorProto.BOOL, []),
               helper.make_tensor_value_info(f"{PREFIX}rows_out", TensorProto.FLOAT, [None, 7])]
    body = helper.make_graph(nodes, f"{graph.name}_one_image", inputs, outputs, initializer=constants)
    body.value_info.extend(value for value in graph.value_info if value.name not in (input_name, detections))
    return body


def _renamed(nodes, names: dict) -> list:
    """Copies of `nodes` with the tensors in `names` renamed."""
    copies = []
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [names.get(name, name) for name in node.input]
        copy.output[:] = [names.get(name, name) for name in node.output]
        copies.append(copy)
    return copies


def one_image_model(model: onnx.ModelProto):
    """The one-image model a dynamic-batch model wraps (None when `model` is
    not one), so that tools working on a plain graph (quantize) can take it
    out, work on it and wrap the result again."""
    loops = [node for node in model.graph.node if node.op_type == "Loop" and node.output[0] == f"{PREFIX}all_rows"]
    if len(loops) != 1:
        return None
    body = next(helper.get_attribute_value(a) for a in loops[0].attribute if a.name == "body")
    image_input, detections = model.graph.input[0], model.graph.output[0]
    # The nodes the wrapper added write names under PREFIX; the one-image
    # graph's own nodes write none but its renamed output.
    own = [node for node in body.node if all(name == IMAGE_ROWS or not name.startswith(PREFIX) for name in node.output)]
    nodes = _renamed(own, {IMAGE: image_input.name, IMAGE_ROWS: detections.name})
    output = helper.make_tensor_value_info(detections.name, TensorProto.FLOAT, [1, 1, None, 7])
    graph = helper.make_graph(nodes, model.graph.name, [_with_batch_dim(image_input, 1)], [output],
                              initializer=[init for init in body.initializer if not init.name.startswith(PREFIX)])
    graph.value_info.extend(body.value_info)
    return _with_graph(model, graph)


def _with_batch_dim(value: onnx.ValueInfoProto, dim) -> onnx.ValueInfoProto:
    """A copy of a tensor's ValueInfo with its first dimension set to `dim`
    (a size, or a name for an open axis)."""
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value)
    first = copy.type.tensor_type.shape.dim[0]
    first.Clear()
    if isinstance(dim, str):
        first.dim_param = dim
    else:
        first.dim_value = dim
    return copy


def _with_graph(model: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    """A copy of `model` (opsets, metadata) around another graph."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    result.graph.CopyFrom(graph)
    return result
