"""BatchNorm, Scale, Bias and Normalize: each checker follows the layer's
LayerSetUp/Reshape in the SSD fork."""
from __future__ import annotations

from caffessd.validate.registry import blob_counts, canonical_axis, checker, require, shape_text

blob_counts("LRN", "MVN")


@checker("BatchNorm")
def batch_norm(layer, inputs):
    require(len(inputs[0]) >= 2, "bottom", f"input {shape_text(inputs[0])} has no channel axis")


@checker("Scale", "Bias", bottoms=(1, 2), tops=(1, 1))
def scale(layer, inputs):
    param = layer.scale_param if layer.type == "Scale" else layer.bias_param
    ndim = len(inputs[0])
    if len(inputs) == 2:
        axis = canonical_axis(param.axis, ndim, "axis") if ndim else 0
        factor = inputs[1]
        require(axis + len(factor) <= ndim and tuple(inputs[0][axis:axis + len(factor)]) == tuple(factor),
                "bottom 1", f"shape {shape_text(factor)} must match {shape_text(inputs[0])} from axis {axis}")
        return
    require(param.num_axes >= -1, "num_axes", "must be non-negative, or -1 to extend to the end of the input")
    axis = canonical_axis(param.axis, ndim, "axis") if ndim else 0
    if param.num_axes >= 0:
        require(ndim >= axis + param.num_axes, "num_axes",
                f"axis + num_axes = {axis + param.num_axes} goes past the {ndim}-D input")


@checker("Normalize")
def normalize(layer, inputs):
    require(len(inputs[0]) >= 2, "bottom", "number of axes of the input must be >= 2")
