"""Snapshots as Caffe writes them, and initial weights by layer name.

PREFIX_iter_N.caffemodel: the train net's layers (names, types, params) with
their blobs, which loads by name into the test and deploy nets (Caffe,
caffessd.Net, merge-bn, detect). PREFIX_iter_N.solverstate: a
caffe_pb2.SolverState with the iteration, multistep position and history
blobs. Both files are written together or not at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from caffessd import caffe_pb2, protoio
from caffessd.errors import FormatError
from caffessd.util.files import atomic_write_many, read_bytes


def snapshot_paths(prefix: str, iteration: int) -> Tuple[Path, Path]:
    base = f"{prefix}_iter_{iteration}"
    return Path(base + ".caffemodel"), Path(base + ".solverstate")


def net_model(train_param: caffe_pb2.NetParameter, weights: Dict[str, List[np.ndarray]]) -> caffe_pb2.NetParameter:
    """The caffemodel of the train net: every layer, blobs where it learns."""
    model = caffe_pb2.NetParameter(name=train_param.name)
    for layer in train_param.layer:
        out = model.layer.add()
        out.CopyFrom(layer)
        del out.blobs[:]
        for array in weights.get(layer.name, []):
            protoio.array_to_blob(np.asarray(array, np.float32), out.blobs.add())
    return model


def write_snapshot(prefix: str, iteration: int, train_param, weights, state: caffe_pb2.SolverState) -> Tuple[Path, Path]:
    model_path, state_path = snapshot_paths(prefix, iteration)
    state = caffe_pb2.SolverState.FromString(state.SerializeToString())
    state.learned_net = str(model_path)
    atomic_write_many([(model_path, protoio.serialize(net_model(train_param, weights))),
                               (state_path, protoio.serialize(state))])
    return model_path, state_path


def read_solverstate(path) -> caffe_pb2.SolverState:
    raw = read_bytes(path)
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(raw)
    except Exception:
        raise FormatError(path, "is not a Caffe .solverstate (binary SolverState)") from None
    if not state.HasField("iter") and not state.history:
        raise FormatError(path, "is not a Caffe .solverstate (no iteration, no history)")
    return state


@dataclass
class Mismatch:
    """A layer whose blobs in the weights file do not fit the net (e.g. class heads
    trained for another number of classes)."""

    layer: str
    file_shapes: List[tuple]
    net_shapes: List[tuple]

    def describe(self) -> str:
        def shapes(items):
            return ", ".join(str(tuple(int(d) for d in shape)) for shape in items) or "none"
        return f"{self.layer}: file {shapes(self.file_shapes)}, net {shapes(self.net_shapes)}"


SKIP_HINT = "--skip-mismatched (API: skip_mismatched=True) keeps the net's fillers for such layers"


def weights_by_name(model: caffe_pb2.NetParameter, expected: Dict[str, List[tuple]], source,
                    skip_mismatched: bool = False) -> Tuple[Dict, List[str], List[Mismatch]]:
    """Blobs of `model` for the layers of `expected` ({layer: [blob shapes]}), matched by
    layer name as Caffe's CopyTrainedLayersFrom does. Returns (weights, missing layer
    names, mismatched layers). A blob count or shape that disagrees is an error naming
    the layer, unless skip_mismatched: then the layer is left out of the weights (it keeps
    its filler) and listed, which is how a net fine-tunes from weights trained for
    another number of classes."""
    stored = protoio.layer_blobs(protoio.upgrade_net(model))
    found, missing, mismatched = {}, [], []
    for name, shapes in expected.items():
        arrays = stored.get(name)
        if arrays is None:
            missing.append(name)
            continue
        fitted, problem = _fit(arrays, shapes, name)
        if problem is None:
            found[name] = fitted
        elif skip_mismatched:
            mismatched.append(Mismatch(name, [tuple(a.shape) for a in arrays], [tuple(s) for s in shapes]))
        else:
            raise FormatError(source, f"{problem}; {SKIP_HINT}")
    return found, missing, mismatched


def _fit(arrays, shapes, name):
    """(arrays reshaped to the net's shapes, None) or (None, what disagrees). A blob with the
    right number of values in another shape (Caffe's legacy 4-d InnerProduct) is reshaped."""
    if len(arrays) != len(shapes):
        return None, f"layer '{name}' has {len(arrays)} blob(s), the net needs {len(shapes)}"
    fitted = []
    for i, (array, shape) in enumerate(zip(arrays, shapes)):
        if tuple(array.shape) != tuple(shape):
            if array.size != int(np.prod(shape, dtype=np.int64)):
                return None, f"layer '{name}' blob {i} has shape {tuple(array.shape)}, the net needs {tuple(shape)}"
            array = array.reshape(shape)
        fitted.append(array)
    return fitted, None
