"""Snapshots as Caffe writes them, and initial weights by layer name.

PREFIX_iter_N.caffemodel: the train net's layers (names, types, params) with
their blobs, which loads by name into the test and deploy nets (Caffe,
caffessd.Net, merge-bn, detect). PREFIX_iter_N.solverstate: a
caffe_pb2.SolverState with the iteration, multistep position and history
blobs. Both files are written together or not at all.
"""
from __future__ import annotations

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


def weights_by_name(model: caffe_pb2.NetParameter, expected: Dict[str, List[tuple]], source) -> Tuple[Dict, List[str]]:
    """Blobs of `model` for the layers of `expected` ({layer: [blob shapes]}), matched by
    layer name as Caffe's CopyTrainedLayersFrom does. Returns (weights, missing layer names).
    A blob count or shape that disagrees is an error naming the layer."""
    stored = protoio.layer_blobs(protoio.upgrade_net(model))
    found, missing = {}, []
    for name, shapes in expected.items():
        arrays = stored.get(name)
        if arrays is None:
            missing.append(name)
            continue
        if len(arrays) != len(shapes):
            raise FormatError(source, f"layer '{name}' has {len(arrays)} blob(s), the net needs {len(shapes)}")
        fitted = []
        for i, (array, shape) in enumerate(zip(arrays, shapes)):
            if tuple(array.shape) != tuple(shape):
                if array.size != int(np.prod(shape, dtype=np.int64)):
                    raise FormatError(source, f"layer '{name}' blob {i} has shape {tuple(array.shape)}, "
                                              f"the net needs {tuple(shape)}")
                array = array.reshape(shape)
            fitted.append(array)
        found[name] = fitted
    return found, missing
