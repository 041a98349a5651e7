"""Reading TF variables from a checkpoint or a frozen graph.

Accepted inputs: a checkpoint prefix (model.ckpt, model.ckpt-200000), a folder
holding a `checkpoint` index file (its latest checkpoint is read), or a frozen
GraphDef (frozen_inference_graph.pb), whose Const nodes carry the variables'
values under the variables' names. Only the variables a model needs are ever
read, so optimizer slots, global_step and the like are ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from caffessd.errors import CaffessdError, FormatError
from caffessd.tfconvert.tfimport import tensorflow

EMA_SUFFIX = "/ExponentialMovingAverage"


def import_tensorflow():
    """TensorFlow, or a CaffessdError saying how to install it."""
    return tensorflow("convert-tf")  # quietly: TensorFlow's C++ start-up lines would precede an error line


class VariableStore:
    """Name -> shape/value access over one TF source, with optional EMA values."""

    def __init__(self, shapes: Dict[str, Tuple[int, ...]], fetch, source: str,
                 use_ema: bool = False):
        self._shapes = shapes
        self._fetch = fetch
        self.source = source
        self.use_ema = use_ema
        self.object_based = False  # a TF2 checkpoint (object paths renamed to TF1 names)
        if use_ema and not any(name.endswith(EMA_SUFFIX) for name in shapes):
            raise CaffessdError(f"{source}: --use-ema given but the checkpoint has no "
                                "ExponentialMovingAverage variables")

    def names(self) -> Iterable[str]:
        return (n for n in self._shapes if not n.endswith(EMA_SUFFIX))

    def __contains__(self, name: str) -> bool:
        return name in self._shapes

    def shape(self, name: str) -> Optional[Tuple[int, ...]]:
        return self._shapes.get(name)

    def resolved_name(self, name: str) -> str:
        """The stored name read for `name` (its EMA shadow under --use-ema)."""
        if self.use_ema and name + EMA_SUFFIX in self._shapes:
            return name + EMA_SUFFIX
        return name

    def get(self, name: str, shape: Optional[tuple] = None) -> np.ndarray:
        """The value of `name`, checked against `shape`; errors name the variable."""
        if name not in self._shapes:
            raise CaffessdError(f"{self.source}: variable '{name}' is missing")
        stored = self.resolved_name(name)
        if shape is not None and tuple(self._shapes[stored]) != tuple(shape):
            raise CaffessdError(f"{self.source}: variable '{name}' has shape "
                                f"{list(self._shapes[stored])}, expected {list(shape)}")
        return np.asarray(self._fetch(stored), dtype=np.float32)


def resolve_checkpoint(path) -> Tuple[str, str]:
    """('ckpt', prefix) or ('pb', file) for what the user passed."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pb":
        return "pb", str(path)
    if path.is_dir():
        tf = import_tensorflow()
        from .tf2 import zoo_checkpoint

        zoo = zoo_checkpoint(path)  # a TF2 zoo folder (checkpoint/, saved_model/) or SavedModel
        if zoo is not None:
            return "ckpt", zoo[0]
        latest = tf.train.latest_checkpoint(str(path))
        if latest is None:
            pbs = sorted(path.glob("frozen_inference_graph.pb"))
            if pbs:
                return "pb", str(pbs[0])
            raise FormatError(path, "folder has no 'checkpoint' file naming a checkpoint "
                                    "(nor a frozen_inference_graph.pb)")
        return "ckpt", latest
    index = Path(str(path) + ".index")
    if index.is_file():
        return "ckpt", str(path)
    if path.is_file() and path.name.endswith(".index"):
        return "ckpt", str(path)[: -len(".index")]
    if path.is_file() and ".data-" in path.name:
        return "ckpt", str(path).split(".data-")[0]
    raise FormatError(path, "not a checkpoint prefix (no .index file), checkpoint folder "
                            "or frozen .pb graph")


def open_variables(path, use_ema: bool = False) -> VariableStore:
    kind, target = resolve_checkpoint(path)
    if kind == "pb":
        return _frozen_graph_store(target, use_ema)
    tf = import_tensorflow()
    try:
        reader = tf.train.load_checkpoint(target)
    except Exception as exc:  # TF raises several error types for bad files
        raise FormatError(target, f"cannot read checkpoint: {str(exc).splitlines()[0]}") from None
    shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    from . import tf2

    if tf2.is_object_based(shapes):  # TF2: object paths, renamed to the TF1 names
        keys = tf2.tf1_names(shapes, target)
        store = VariableStore({name: shapes[key] for name, key in keys.items()},
                              lambda name: reader.get_tensor(keys[name]), target, use_ema)
        store.object_based = True
        return store
    return VariableStore(shapes, reader.get_tensor, target, use_ema)


def _frozen_graph_store(path: str, use_ema: bool) -> VariableStore:
    tf = import_tensorflow()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(Path(path).read_bytes())
    except Exception:
        raise FormatError(path, "not a frozen TensorFlow GraphDef") from None
    consts = {node.name: node for node in graph_def.node if node.op == "Const"}
    if not consts:
        raise FormatError(path, "the graph holds no constants (not a frozen graph?)")
    shapes = {name: tuple(d.size for d in node.attr["value"].tensor.tensor_shape.dim)
              for name, node in consts.items()}

    def fetch(name):
        return tf.make_ndarray(consts[name].attr["value"].tensor)

    return VariableStore(shapes, fetch, path, use_ema)


def frozen_input_size(path) -> Optional[Tuple[int, int]]:
    """(height, width) the frozen graph resizes images to, when it says so."""
    kind, target = resolve_checkpoint(path)
    if kind != "pb":
        return None
    tf = import_tensorflow()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(target).read_bytes())
    for node in graph_def.node:
        # The OD API's preprocessor resizes with ResizeBilinear/ResizeImage and
        # a Const 'size' [height, width].
        if node.op == "Const" and node.name.endswith(("ResizeImage/size", "resize/size")):
            size = tf.make_ndarray(node.attr["value"].tensor)
            if size.shape == (2,):
                return int(size[0]), int(size[1])
    return None
