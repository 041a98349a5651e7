"""A Caffe net as caffessd uses it: the layers of one phase, the weights joined
to them by layer name, and every blob's shape.

    net = Net.load("deploy.prototxt", "snapshot.caffemodel")
    shapes = net.infer_shapes()            # {blob name: shape}
    for info in net.walk(): ...            # per layer: inputs, outputs, param shapes

Joining by name is what Caffe's CopyTrainedLayersFrom does: a caffemodel saved
from a train net carries data and loss layers the deploy net lacks, and those
are ignored.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from caffessd import caffe_pb2, protoio
from caffessd.errors import FormatError, UnsupportedLayerError
from caffessd.validate import LayerRuleError, check_layer, check_outputs
from caffessd.validate.memory import MemoryBudget, MemoryEstimate, values
from caffessd.layers import (
    DATA_LAYER_TYPES, LOSS_LAYER_TYPES, Shape, multiply_adds, output_shapes, param_shapes,
)
from caffessd.netnotes import read_notes

PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}


@dataclass
class LayerInfo:
    """One layer with the shapes flowing through it."""

    layer: caffe_pb2.LayerParameter
    input_shapes: List[Shape]
    output_shapes: List[Shape]
    param_shapes: List[Shape]
    weights: List[np.ndarray] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def type(self) -> str:
        return self.layer.type

    @property
    def param_count(self) -> int:
        if self.weights:
            return int(sum(w.size for w in self.weights))
        return int(sum(np.prod(s, dtype=np.int64) for s in self.param_shapes))

    @property
    def multiply_adds(self) -> int:
        return multiply_adds(self.layer, self.input_shapes, self.output_shapes)


def _rule_matches(rule: caffe_pb2.NetStateRule, state: caffe_pb2.NetState) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(stage not in stages for stage in rule.stage):
        return False
    if any(stage in stages for stage in rule.not_stage):
        return False
    return True


def layer_in_state(layer: caffe_pb2.LayerParameter, state: caffe_pb2.NetState) -> bool:
    """Caffe's include/exclude logic (Net::StateMeetsRule)."""
    if layer.include:
        return any(_rule_matches(rule, state) for rule in layer.include)
    return not any(_rule_matches(rule, state) for rule in layer.exclude)


def filter_phase(param: caffe_pb2.NetParameter, phase: str = "TEST",
                 stages: Sequence[str] = (), level: int = 0) -> caffe_pb2.NetParameter:
    """Copy of `param` keeping only the layers Caffe would build in that state."""
    state = caffe_pb2.NetState(phase=PHASES[phase.upper()], level=level, stage=list(stages))
    kept = caffe_pb2.NetParameter()
    kept.CopyFrom(param)
    del kept.layer[:]
    kept.layer.extend(layer for layer in param.layer if layer_in_state(layer, state))
    kept.ClearField("state")
    return kept


def last_writers(layers) -> Dict[str, str]:
    """Blob name -> the name of the last layer that writes it (in-place layers
    such as ReLU write their input again: the exported node is the last one)."""
    writers = {}
    for layer in layers:
        for top in layer.top:
            writers[top] = layer.name
    return writers


class Net:
    """Layers of one phase, their weights (by layer name) and shape inference."""

    def __init__(self, param: caffe_pb2.NetParameter, weights: Optional[Dict[str, List[np.ndarray]]] = None,
                 source: Optional[str] = None, weights_source: Optional[str] = None):
        self.param = param
        self.weights: Dict[str, List[np.ndarray]] = dict(weights or {})
        self.source = source
        self.weights_source = weights_source
        # caffessd notes of the prototxt (caffessd.netnotes): facts Caffe's schema cannot hold.
        self.notes: dict = {}
        self.memory: Optional[MemoryEstimate] = None  # set by each complete walk()

    # ------------------------------------------------------------ loading

    @classmethod
    def load(cls, prototxt, weights=None, phase: str = "TEST", strict: bool = True) -> "Net":
        """Read a prototxt (and optionally a caffemodel) into a Net of `phase`.

        With `strict`, every layer that has learnable blobs must find them in the
        caffemodel, with matching shapes; otherwise missing ones stay empty.
        """
        param = filter_phase(protoio.read_net(prototxt, binary_ok=False), phase)
        net = cls(param, source=os.fspath(prototxt))
        net.notes = read_notes(prototxt)
        if weights is not None:
            net.attach_weights(protoio.read_caffemodel(weights), os.fspath(weights), strict=strict)
        return net

    def attach_weights(self, model: caffe_pb2.NetParameter, source: Optional[str] = None,
                       strict: bool = True) -> None:
        """Join the blobs of `model` (a caffemodel, possibly from a train net) by layer name."""
        try:
            model = protoio.upgrade_net(model)
        except ValueError as exc:
            raise FormatError(source, str(exc)) from None
        by_name = {layer.name: layer for layer in model.layer if layer.blobs}
        self.weights_source = source
        missing = []
        for info in self.walk(with_weights=False):
            expected = info.param_shapes
            if not expected:
                continue
            stored = by_name.get(info.name)
            if stored is None:
                missing.append(info.name)
                continue
            try:
                arrays = [protoio.blob_to_array(blob) for blob in stored.blobs]
            except ValueError as exc:  # data and shape disagree inside the caffemodel
                raise FormatError(source, f"layer '{info.name}': {exc}") from None
            self.weights[info.name] = _fit_blobs(info, arrays, expected, source)
        if missing and strict:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise FormatError(source, f"has no weights for layer(s) {shown} of {self.source or 'the net'}")

    # ------------------------------------------------------------ structure

    @property
    def layers(self) -> List[caffe_pb2.LayerParameter]:
        return list(self.param.layer)

    @property
    def name(self) -> str:
        return self.param.name

    def input_shapes(self) -> Dict[str, Shape]:
        """Shapes declared by the net: `input`+`input_shape`, or Input layers."""
        shapes: Dict[str, Shape] = {}
        declared = [tuple(int(d) for d in s.dim) for s in self.param.input_shape]
        for i, name in enumerate(self.param.input):
            if i < len(declared):
                shapes[name] = declared[i]
            elif declared:
                shapes[name] = declared[-1]
            else:
                raise FormatError(self.source, f"input '{name}' has no input_shape or input_dim")
        for layer in self.param.layer:
            if layer.type == "Input":
                for top, shape in zip(layer.top, output_shapes(layer, [])):
                    shapes[top] = shape
        return shapes

    def walk(self, input_shapes: Optional[Dict[str, Shape]] = None, with_weights: bool = True) -> Iterator[LayerInfo]:
        """Yield a LayerInfo per layer, propagating shapes from the inputs."""
        shapes: Dict[str, Shape] = dict(self.input_shapes())
        shapes.update(input_shapes or {})
        # Memory is added up before anything is allocated (here or by the caller).
        budget = MemoryBudget(self.source)
        for name, shape in shapes.items():
            budget.add("blobs", f"input '{name}' {_shape_text(shape)}", values(shape))
        # Net::Init's rules: a blob has one producer (rewriting it is only
        # allowed in place), and caffessd joins weights by layer name.
        produced, learnable = set(self.param.input), {}
        for layer in self.param.layer:
            missing = [b for b in layer.bottom if b not in shapes]
            if missing:
                raise FormatError(self.source, f"layer '{layer.name}' reads blob '{missing[0]}', which no earlier layer or input produces")
            _check_unique(layer, produced, self.source)  # bottoms first, as Net::Init appends them
            inputs = [shapes[b] for b in layer.bottom]
            where = f"layer '{layer.name}' ({layer.type})"
            try:
                check_layer(layer, inputs)  # Caffe's LayerSetUp/Reshape rules
                outputs = output_shapes(layer, inputs)
                params = param_shapes(layer, inputs)
            except (ValueError, IndexError, ZeroDivisionError, OverflowError) as exc:
                raise FormatError(self.source, f"{where}: {exc}") from None
            except UnsupportedLayerError as exc:
                raise exc.in_file(self.source) from None
            empty = next((s for s in outputs if any(d == 0 or d < -1 for d in s)), None)
            if empty is not None:  # -1 is DetectionOutput's data-dependent row count
                raise FormatError(self.source, f"{where} gives an empty output "
                                               f"{'x'.join(map(str, empty))}: its input {inputs[0] if inputs else ''} is too small")
            _check_name(layer, bool(params), learnable, self.source)
            _add_memory(budget, layer, where, outputs, params)
            try:
                check_outputs(outputs)
            except LayerRuleError as exc:
                raise FormatError(self.source, f"{where}: {exc}") from None
            for top, shape in zip(layer.top, outputs):
                shapes[top] = shape
            weights = self.weights.get(layer.name, []) if with_weights else []
            yield LayerInfo(layer, inputs, outputs, params, weights)
        self.memory = budget.estimate

    def memory_estimate(self, input_shapes: Optional[Dict[str, Shape]] = None) -> MemoryEstimate:
        """Bytes of blobs, priors and weights the net needs (refuses, like walk,
        a net beyond the memory limit)."""
        for _ in self.walk(input_shapes, with_weights=False):
            pass
        return self.memory

    def infer_shapes(self, input_shapes: Optional[Dict[str, Shape]] = None) -> Dict[str, Shape]:
        """Final shape of every blob (in-place layers keep their blob's shape)."""
        shapes = dict(self.input_shapes())
        shapes.update(input_shapes or {})
        for info in self.walk(input_shapes, with_weights=False):
            shapes.update(zip(info.layer.top, info.output_shapes))
        return shapes

    def output_names(self) -> List[str]:
        """Blobs produced but never consumed by a later layer (the net's outputs)."""
        consumed, produced = set(), []
        for layer in self.param.layer:
            consumed.update(b for b in layer.bottom if b not in layer.top)
            for top in layer.top:
                if top not in produced:
                    produced.append(top)
        inputs = set(self.input_shapes())
        return [b for b in produced if b not in consumed and b not in inputs and not self._is_silenced(b)]

    def _is_silenced(self, blob: str) -> bool:
        return any(layer.type == "Silence" and blob in layer.bottom for layer in self.param.layer)

    def deploy_layers(self) -> List[caffe_pb2.LayerParameter]:
        """Layers that take part in inference (no data, loss or evaluation layers)."""
        return [layer for layer in self.param.layer
                if layer.type not in DATA_LAYER_TYPES and layer.type not in LOSS_LAYER_TYPES]


def _check_name(layer, has_params: bool, learnable: dict, source) -> None:
    """Weights are joined by layer name (Caffe's CopyTrainedLayersFrom), so a
    name shared with a layer that has weights is ambiguous: Caffe copies into
    the last one and stops when its blob count differs."""
    earlier = learnable.get(layer.name)
    if earlier is not None and (earlier or has_params):
        raise FormatError(source, f"layer '{layer.name}' ({layer.type}): name: an earlier layer has the same name "
                                  f"and one of them has weights, which are joined by layer name")
    learnable[layer.name] = bool(earlier) or has_params


def _check_unique(layer, produced: set, source) -> None:
    for index, top in enumerate(layer.top):
        in_place = index < len(layer.bottom) and layer.bottom[index] == top
        if top in produced and not in_place:
            raise FormatError(source, f"layer '{layer.name}' ({layer.type}): top {index}: blob '{top}' is "
                                      f"already produced by an earlier layer (only in-place layers may rewrite it)")
        produced.add(top)


def _shape_text(shape: Shape) -> str:
    return "x".join("N" if d == -1 else str(d) for d in shape)


def _add_memory(budget: MemoryBudget, layer, where: str, outputs: List[Shape], params: List[Shape]) -> None:
    """Count the blobs a layer writes (not in-place ones) and its weights."""
    rows = max(layer.detection_output_param.keep_top_k, 1)  # DetectionOutput's -1 rows
    kind = "priors" if layer.type == "PriorBox" else "blobs"
    for top, shape in zip(layer.top, outputs):
        if top not in layer.bottom:
            budget.add(kind, lambda shape=shape: f"{where}: its output {_shape_text(shape)}", values(shape, rows))
    if params:
        budget.add("weights", lambda: f"{where}: its weights", sum(values(p) for p in params))


def _fit_blobs(info: LayerInfo, arrays: List[np.ndarray], expected: List[Shape], source) -> List[np.ndarray]:
    """Check stored blobs against the shapes the prototxt implies.

    Legacy 4-d blobs (e.g. an InnerProduct weight stored as 1x1xOxK) are
    reshaped when the element count agrees, as Caffe's ShapeEquals allows.
    """
    if len(arrays) != len(expected):
        raise FormatError(source, f"layer '{info.name}' ({info.type}) has {len(arrays)} blob(s), the prototxt needs {len(expected)}")
    fitted = []
    for i, (array, shape) in enumerate(zip(arrays, expected)):
        if tuple(array.shape) != tuple(shape):
            if array.size == int(np.prod(shape, dtype=np.int64)):
                array = array.reshape(shape)
            else:
                raise FormatError(source, f"layer '{info.name}' blob {i} has shape {tuple(array.shape)}, the prototxt needs {tuple(shape)}")
        fitted.append(array)
    return fitted
