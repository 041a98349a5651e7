"""Layer-type -> writer registry of the ncnn exporter.

A writer is `fn(graph: NcnnGraph, info: LayerInfo) -> None`: it reads its
bottoms with `graph.bottom(blob)`, adds one or more ncnn layers and names each
top with `graph.top(layer_name, blob)` (`graph.emit` does all three for the
common one-layer case). A layer type without a writer, or a form of a layer
that ncnn cannot express, is refused with UnsupportedLayerError naming it.
"""
from __future__ import annotations

from typing import Callable, Dict

from caffessd.errors import UnsupportedLayerError

WRITERS: Dict[str, Callable] = {}


def writer(*layer_types: str):
    """Register the decorated function for the given Caffe layer type names."""
    def register(fn):
        for layer_type in layer_types:
            WRITERS[layer_type] = fn
        return fn
    return register


def refuse(info, why: str) -> UnsupportedLayerError:
    """The error for a layer whose settings ncnn cannot express (`why` says which)."""
    return UnsupportedLayerError(info.layer.name, info.layer.type, f"expressible in ncnn: {why}")


def ncnn_axis(info, axis: int, rank: int) -> int:
    """Caffe axis -> ncnn axis: ncnn blobs have no batch axis (axis 0 is
    Caffe's axis 1). A layer working across images is refused."""
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise refuse(info, "it works across the batch axis, and ncnn blobs hold one image")
    return axis - 1
