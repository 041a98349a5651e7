"""Layer-type -> builder registry of the TensorFlow executor.

A builder is `fn(ctx: ForwardContext, info: LayerInfo) -> None`: it reads its
bottoms with `ctx.get(blob)` (NCHW, as Caffe) or `ctx.get_nhwc(blob)`, reads
its learnable blobs with `ctx.params(info)` and binds its tops with
`ctx.set(layer, index, tensor)`.

A family may also say how a layer type's blobs are kept in their variables
(`storage`: `fn(info) -> [BlobLayout or None per blob]`, None being Caffe's
layout); its builder then asks `ctx.params(info, layouts)` for them so.
"""
from __future__ import annotations

from typing import Callable, Dict, List

from caffessd.train.executor.layouts import BlobLayout

BUILDERS: Dict[str, Callable] = {}
STORAGE: Dict[str, Callable] = {}


def _registrar(table: Dict[str, Callable], *layer_types: str):
    def register(fn):
        for layer_type in layer_types:
            table[layer_type] = fn
        return fn
    return register


def builder(*layer_types: str):
    """Register the decorated function for the given Caffe layer type names."""
    return _registrar(BUILDERS, *layer_types)


def storage(*layer_types: str):
    """Register the decorated function as the blob layouts of the given layer types."""
    return _registrar(STORAGE, *layer_types)


def storage_layouts(info) -> List[BlobLayout]:
    """How each of the layer's blobs is kept (Caffe's layout unless its family says otherwise)."""
    chosen = STORAGE[info.type](info) if info.type in STORAGE else []
    return [chosen[i] if i < len(chosen) and chosen[i] is not None else BlobLayout.caffe(shape)
            for i, shape in enumerate(info.param_shapes)]
