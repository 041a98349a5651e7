"""Convolution, Deconvolution and Pooling: BaseConvolutionLayer::LayerSetUp /
Reshape and PoolingLayer::LayerSetUp / Reshape of the SSD fork."""
from __future__ import annotations

from caffessd.validate.registry import checker, require, require_int, shape_text


def _per_axis(param, repeated: str, h_name: str, w_name: str, spatial: int, needed: bool) -> None:
    """A geometry field given as *_h/*_w (2-D only, not with the repeated
    form) or repeated once or once per spatial axis."""
    values = list(getattr(param, repeated))
    if param.HasField(h_name) or param.HasField(w_name):
        require(spatial == 2, h_name, f"{h_name} & {w_name} can only be used for 2-D convolution")
        require(not values, repeated, f"give either {repeated} or {h_name}/{w_name}, not both")
        return
    allowed = {1, spatial} if needed else {0, 1, spatial}
    require(len(values) in allowed, repeated, f"must be given once{'' if needed else ' (or not at all)'} or "
                                              f"once per spatial axis ({spatial}), given {len(values)} times")


@checker("Convolution", "Deconvolution", bottoms=(1, None), tops=(1, None))
def convolution(layer, inputs):
    param = layer.convolution_param
    require(len(layer.bottom) == len(layer.top), "top", f"needs one top per bottom ({len(layer.bottom)}), "
                                                        f"has {len(layer.top)}")
    shape = inputs[0]
    require(len(shape) >= 3, "bottom", f"input {shape_text(shape)} has no spatial axis")
    spatial = len(shape) - 2
    _per_axis(param, "kernel_size", "kernel_h", "kernel_w", spatial, needed=True)
    _per_axis(param, "stride", "stride_h", "stride_w", spatial, needed=False)
    _per_axis(param, "pad", "pad_h", "pad_w", spatial, needed=False)
    require(len(param.dilation) in (0, 1, spatial), "dilation",
            f"must be given once or once per spatial axis ({spatial}), given {len(param.dilation)} times")
    from caffessd.layers import conv_geometry

    kernel, stride, pad, dilation = conv_geometry(param, spatial)
    for field, values in (("kernel_size", kernel), ("stride", stride), ("pad", pad), ("dilation", dilation),
                          ("num_output", [param.num_output]), ("group", [param.group])):
        require_int(values, field)
    require(all(k > 0 for k in kernel), "kernel_size", f"filter dimensions must be positive, got {kernel}")
    require(all(s > 0 for s in stride), "stride", f"stride must be positive, got {stride}")
    require(all(d > 0 for d in dilation), "dilation", f"dilation must be positive, got {dilation}")
    require(param.num_output > 0, "num_output", f"must be positive, got {param.num_output}")
    group = param.group
    require(group > 0, "group", f"must be positive, got {group}")
    require(shape[1] % group == 0, "group", f"{group} groups do not divide the {shape[1]} input channels")
    require(param.num_output % group == 0, "group",
            f"{group} groups do not divide num_output {param.num_output}")
    for index, other in enumerate(inputs[1:], start=1):
        require(tuple(other) == tuple(shape), f"bottom {index}",
                f"all inputs must have the same shape ({shape_text(other)} vs {shape_text(shape)})")


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
    from caffessd.layers import pool_geometry

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
