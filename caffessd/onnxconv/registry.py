"""Layer-type -> emitter registry.

An emitter is `fn(ctx: ConversionContext, info: LayerInfo) -> None`: it reads
its bottoms with `ctx.value(blob)` (or `ctx.const_of(blob)`), appends nodes,
and binds each top with `ctx.bind` / `ctx.bind_const`.
"""
from __future__ import annotations

from typing import Callable, Dict

EMITTERS: Dict[str, Callable] = {}


def emitter(*layer_types: str):
    """Register the decorated function for the given Caffe layer type names."""
    def register(fn):
        for layer_type in layer_types:
            EMITTERS[layer_type] = fn
        return fn
    return register


def bottom(ctx, info, index: int = 0) -> str:
    return ctx.value(info.layer.bottom[index])


def emit_unary(ctx, info, op: str, **attrs) -> None:
    """One-input, one-output node writing the layer's first top."""
    ctx.emit_top(info.layer, op, [bottom(ctx, info)], **attrs)
