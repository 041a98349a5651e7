"""Caffe Net -> onnx.ModelProto."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import helper

from caffessd import __version__
from caffessd.errors import CaffessdError, UnsupportedLayerError
from caffessd.layers import DATA_LAYER_TYPES, LOSS_LAYER_TYPES
from caffessd.net import Net, last_writers
from caffessd.onnxconv.context import ConversionContext
from caffessd.onnxconv.metadata import normalise_preprocessing, set_metadata
from caffessd.onnxconv.registry import EMITTERS
from caffessd.onnxconv.ssd import detection_settings

MIN_OPSET, MAX_OPSET = 13, 21
RAW_OUTPUTS = ("loc", "conf", "priors")
SKIPPED_TYPES = DATA_LAYER_TYPES | LOSS_LAYER_TYPES | {"Input"}

InputShapes = Union[None, Sequence[int], Dict[str, Sequence[int]]]


def _input_overrides(net: Net, input_shapes: InputShapes) -> Dict[str, tuple]:
    """`input_shapes` as {name: shape}; a bare shape applies to the first input."""
    if input_shapes is None:
        return {}
    if isinstance(input_shapes, dict):
        return {name: tuple(int(d) for d in shape) for name, shape in input_shapes.items()}
    declared = list(net.input_shapes())
    if not declared:
        raise CaffessdError("the net declares no input to apply an input shape to")
    return {declared[0]: tuple(int(d) for d in input_shapes)}


def _deploy_layers(net: Net, raw: bool):
    """Layers that become ONNX nodes (raw: everything but DetectionOutput)."""
    return [layer for layer in net.param.layer
            if layer.type not in SKIPPED_TYPES and not (raw and layer.type == "DetectionOutput")]


def _output_blobs(layers) -> List[str]:
    """Blobs written by `layers` and read by none of them afterwards (nor silenced)."""
    consumed, produced = set(), []
    for layer in layers:
        consumed.update(b for b in layer.bottom if b not in layer.top)
        if layer.type == "Silence":
            continue
        produced.extend(t for t in layer.top if t not in produced)
    return [b for b in produced if b not in consumed]


def to_onnx(net: Net, *, raw: bool = False, opset: int = 17, input_shapes: InputShapes = None,
            extra_outputs: Optional[List[str]] = None, metadata: Optional[dict] = None,
            constant_priors: bool = False) -> onnx.ModelProto:
    """Convert a loaded Caffe net (with weights) to a checked ONNX model.

    raw: leave DetectionOutput out; the outputs are `loc`, `conf` and `priors`
    (its three inputs), loadable by runtimes without NonMaxSuppression.
    constant_priors: with raw, leave the `priors` output a bare constant, for
    a consumer that builds on the graph (the OpenVINO export) rather than
    loading it in OpenCV (see _computed_priors).
    extra_outputs: layer names (that layer's first top, as OpenCV's
    net.forward(name) reads it) or blob names (the blob's final value), also
    exposed as graph outputs under the same name.
    metadata: preprocessing facts (mean, scale, input_size, channel_order).
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise CaffessdError(f"opset {opset} is not supported (use {MIN_OPSET}..{MAX_OPSET})")
    overrides = _input_overrides(net, input_shapes)
    layers = _deploy_layers(net, raw)
    detection = [layer for layer in net.param.layer if layer.type == "DetectionOutput"]
    if raw and detection:
        outputs = dict(zip(RAW_OUTPUTS, detection[0].bottom))
    else:
        outputs = {blob: blob for blob in _output_blobs(layers)}
    writers = last_writers(layers)
    # Extra output names are reserved too: a layer and a blob may share a name.
    ctx = ConversionContext(opset, reserved=set(outputs) | set(extra_outputs or []),
                            final_writers={name: writers[blob] for name, blob in outputs.items()
                                           if name == blob and blob in writers})
    ctx.notes = dict(getattr(net, "notes", None) or {})

    shapes = dict(net.input_shapes())
    shapes.update(overrides)
    for name, shape in shapes.items():
        ctx.add_input(name, shape)
    _emit_layers(ctx, net, overrides, raw)

    sources = {name: ctx.value(blob) for name, blob in outputs.items()}
    if raw and detection and not constant_priors and ctx.const_of(outputs["priors"]) is not None:
        sources["priors"] = _computed_priors(ctx, sources["priors"], sources["loc"])
    for name in extra_outputs or []:
        if name not in sources:
            sources[name] = _resolve_extra(ctx, name)
    graph_outputs = [_output_info(ctx, ctx.output_value(name, value), value) for name, value in sources.items()]

    graph = helper.make_graph(ctx.nodes, net.name or "caffessd", ctx.inputs, graph_outputs, ctx.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="caffessd", producer_version=__version__)
    model.ir_version = min(model.ir_version, 8 if opset <= 17 else 9)
    facts = {"kind": "raw" if raw and detection else "full",
             "inputs": {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in ctx.inputs}}
    if detection:
        facts["detection_output"] = detection_settings(detection[0], ctx.notes)
    first_input = next(iter(shapes.values()), None)
    preprocessing = dict(metadata or {})
    if first_input is not None and len(first_input) == 4:
        preprocessing.setdefault("input_size", [first_input[3], first_input[2]])
    facts.update(normalise_preprocessing(preprocessing))
    set_metadata(model, facts)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise CaffessdError(f"the converted model fails onnx.checker: {str(exc).splitlines()[0]}") from None
    return model


def _emit_layers(ctx: ConversionContext, net: Net, overrides, raw: bool) -> None:
    for info in net.walk(overrides or None):
        layer = info.layer
        if layer.type in DATA_LAYER_TYPES:
            # A train/test net's data layer: its tops are fed from outside.
            for top, shape in zip(layer.top, info.output_shapes):
                if not ctx.has_blob(top) and all(d > 0 for d in shape):
                    ctx.add_input(top, shape)
            continue
        if layer.type in SKIPPED_TYPES or (raw and layer.type == "DetectionOutput"):
            continue
        emit = EMITTERS.get(layer.type)
        if emit is None:
            raise UnsupportedLayerError(layer.name, layer.type, "supported by the ONNX converter", net.source)
        if any(info.param_shapes) and not info.weights:
            raise CaffessdError(f"layer '{layer.name}' ({layer.type}) has no weights; load the net with its caffemodel")
        try:
            emit(ctx, info)
        except UnsupportedLayerError as exc:  # an emitter refusing a variant (STOCHASTIC pooling)
            raise exc.in_file(net.source) from None
        ctx.note_shapes(layer, info.output_shapes)


def _computed_priors(ctx: ConversionContext, priors: str, loc: str) -> str:
    """The priors as the output of a real operator rather than a bare constant.

    OpenCV 4.x's ONNX importer folds constant-only subgraphs and then cannot
    find a layer for a constant graph output, so the raw model adds a zero
    derived from `loc` (one element times 0) to the prior constant. Runtimes
    that fold constants pay for it at every run: in OpenVINO it was a 0.1 ms
    Add plus a layout Reorder of the priors on a 1.2 ms int8 face detector.
    """
    first = ctx.slice(loc, [0, 0], [1, 1], [0, 1], "priors_anchor")
    zero = ctx.node("Mul", [first, ctx.initializer("priors_zero", np.float32(0))], "priors_zero_term")
    zero = ctx.reshape(zero, [1, 1, 1], "priors_zero_3d")
    value = ctx.node("Add", [priors, zero], "priors_value")
    ctx.shapes[value] = ctx.shapes.get(priors)
    return value


def _output_info(ctx: ConversionContext, name: str, value: str) -> onnx.ValueInfoProto:
    shape = ctx.shapes.get(value)
    if shape is not None:
        shape = [d if d >= 0 else "detections" for d in shape]
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def _resolve_extra(ctx: ConversionContext, name: str) -> str:
    value = ctx.layer_output(name)
    if value is not None:
        return value
    if ctx.has_blob(name):
        return ctx.value(name)
    raise CaffessdError(f"extra output '{name}' is neither a layer nor a blob of the converted net")


def convert(prototxt, caffemodel, **kw) -> onnx.ModelProto:
    """Net.load(prototxt, caffemodel) then to_onnx(**kw)."""
    return to_onnx(Net.load(prototxt, caffemodel), **kw)
