"""Caffe Net -> ncnn model (NAME.param text + NAME.bin bytes).

    model = to_ncnn(Net.load("deploy.prototxt", "w.caffemodel"), fp16=False)
    model.param, model.weights, model.inputs, model.outputs

Written directly from the Caffe net, as ncnn's own tools/caffe/caffe2ncnn
does, so no ncnn build is needed. Every layer type goes through the writer
registered for it (caffessd.export.ncnn.registry); a type without one, or a form of
a layer ncnn cannot express, stops the export with one error naming the layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from caffessd.errors import CaffessdError, UnsupportedLayerError
from caffessd.export.ncnn.graph import NcnnGraph
from caffessd.export.ncnn.registry import WRITERS
from caffessd.layers import DATA_LAYER_TYPES, LOSS_LAYER_TYPES
from caffessd.net import Net, last_writers

SKIPPED_TYPES = DATA_LAYER_TYPES | LOSS_LAYER_TYPES | {"Input"}
RAW_OUTPUTS = ("loc", "conf", "priors")


@dataclass
class NcnnModel:
    """An exported model: the two files' contents and its interface."""

    param: str
    weights: bytes
    inputs: Dict[str, List[int]]            # ncnn input blob -> Caffe shape (N, C, H, W)
    outputs: List[str]                      # blobs to extract (DetectionOutput's, or loc/conf/priors)
    raw_outputs: Dict[str, str] = field(default_factory=dict)   # loc/conf/priors -> blob (--raw)
    layer_count: int = 0
    layer_outputs: Dict[str, List[str]] = field(default_factory=dict)  # Caffe layer -> ncnn blobs of its tops
    detections: Optional[str] = None        # DetectionOutput's blob (None for --raw or a net without one)


def to_ncnn(net: Net, *, raw: bool = False, fp16: bool = False, input_shapes: Optional[dict] = None) -> NcnnModel:
    """Write `net` (with weights) as an ncnn model. `raw` leaves DetectionOutput
    out: the model then ends at its three inputs (loc, conf after the net's
    softmax/sigmoid, priors). `fp16` stores convolution and inner-product
    weights as float16 (ncnn widens them when it loads the model)."""
    declared = dict(net.input_shapes())
    shapes = {name: (1, *shape[1:]) for name, shape in declared.items()}   # ncnn runs one image
    shapes.update({k: tuple(v) for k, v in (input_shapes or {}).items()})
    layers = [layer for layer in net.param.layer if layer.type not in SKIPPED_TYPES
              and not (raw and layer.type == "DetectionOutput")]
    graph = NcnnGraph(last_writers(layers))
    graph.notes = dict(getattr(net, "notes", None) or {})
    for name, shape in shapes.items():
        if len(shape) != 4:
            raise CaffessdError(f"input '{name}' has shape {list(shape)}; the ncnn export takes N,C,H,W images")
        graph.add_input(name, shape)
    detection = None
    layer_outputs: Dict[str, List[str]] = {}
    for info in net.walk(shapes):
        layer = info.layer
        if layer.type in DATA_LAYER_TYPES:
            raise CaffessdError(f"layer '{layer.name}' ({layer.type}) reads training data; export the deploy net")
        if layer.type in SKIPPED_TYPES:
            continue
        if layer.type == "DetectionOutput":
            detection = layer
            if raw:
                continue
        write = WRITERS.get(layer.type)
        if write is None:
            raise UnsupportedLayerError(layer.name, layer.type, "expressible in ncnn by caffessd's exporter")
        if any(info.param_shapes) and not info.weights:
            raise CaffessdError(f"layer '{layer.name}' ({layer.type}) has no weights; load the net with its caffemodel")
        write(graph, info)
        layer_outputs[layer.name] = [graph.bottom(top) for top in layer.top]
    raw_outputs, detections = {}, None
    if detection is not None and not raw:
        detections = layer_outputs[detection.name][0]
    if raw and detection is not None:
        raw_outputs = {key: graph.bottom(blob) for key, blob in zip(RAW_OUTPUTS, detection.bottom)}
        outputs = list(raw_outputs.values())
    else:
        outputs = graph.outputs()
    param, weights = graph.serialize(fp16)
    return NcnnModel(param, weights, {k: list(v) for k, v in shapes.items()}, outputs, raw_outputs,
                     len(graph.with_splits()), layer_outputs, detections)


def convert(prototxt, caffemodel, **kw) -> NcnnModel:
    """Net.load(prototxt, caffemodel) then to_ncnn(**kw)."""
    return to_ncnn(Net.load(prototxt, caffemodel), **kw)
