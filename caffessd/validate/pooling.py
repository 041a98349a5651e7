"""Pooling: PoolingLayer::LayerSetUp / Reshape of the SSD fork."""
from __future__ import annotations

from caffessd.layers import pool_geometry
from caffessd.validate.registry import checker, require, require_int, shape_text


@checker("Pooling", bottoms=(1, 1), tops=(1, 2))
def pooling(layer, inputs):
    param = layer.pooling_param
    require(len(inputs[0]) == 4, "bottom", f"input must have 4 axes (num, channels, height, width), "
                                           f"got {shape_text(inputs[0])}")
    has_hw = param.HasField("kernel_h") and param.HasField("kernel_w")
    if param.global_pooling:
        require(not (param.HasField("kernel_size") or param.HasField("kernel_h") or param.HasField("kernel_w")),
                "kernel_size", "cannot be given with global_pooling: true")
    else:
        require(param.HasField("kernel_size") != has_hw, "kernel_size",
                "give kernel_size or both kernel_h and kernel_w, not both and not neither")
    for name in ("pad", "stride"):
        split = (param.HasField(f"{name}_h"), param.HasField(f"{name}_w"))
        require(split == (False, False) or (split == (True, True) and not param.HasField(name)), name,
                f"give {name} or both {name}_h and {name}_w, not both")
    kernel, stride, pad = pool_geometry(param, inputs[0][2:])
    for field, values in (("kernel_size", kernel), ("stride", stride), ("pad", pad)):
        require_int(values, field)
    if param.global_pooling:
        require(not any(param.HasField(f) and getattr(param, f) != d
                        for f, d in (("pad", 0), ("pad_h", 0), ("pad_w", 0), ("stride", 1),
                                     ("stride_h", 1), ("stride_w", 1))),
                "global_pooling", "with global_pooling: true only pad = 0 and stride = 1")
        return
    require(all(k > 0 for k in kernel), "kernel_size", f"filter dimensions must be positive, got {kernel}")
    require(all(s > 0 for s in stride), "stride", f"stride must be positive, got {stride}")
    if any(pad):
        require(all(p < k for p, k in zip(pad, kernel)), "pad", f"pad {pad} must be smaller than the kernel {kernel}")
    if len(layer.top) == 2:
        require(param.pool == param.MAX, "top", "a second top (the argmax mask) needs MAX pooling")
