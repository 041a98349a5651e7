"""Convolution, Deconvolution and InnerProduct: BaseConvolutionLayer::LayerSetUp /
Reshape and InnerProductLayer::LayerSetUp of the SSD fork."""
from __future__ import annotations

from caffessd.validate.registry import canonical_axis, checker, require, require_int, shape_text
from caffessd.layers import conv_geometry


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


@checker("InnerProduct")
def inner_product(layer, inputs):
    param = layer.inner_product_param
    require_int([param.num_output], "num_output")
    require(param.num_output > 0, "num_output", f"must be positive, got {param.num_output}")
    canonical_axis(param.axis, len(inputs[0]), "axis")
