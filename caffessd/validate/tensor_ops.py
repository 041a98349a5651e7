"""Layers that move or combine tensors (and ArgMax, Tile, Reduction), plus the
blob-count rules of the element-wise layers: each checker follows the
layer's LayerSetUp/Reshape in the SSD fork."""
from __future__ import annotations

from caffessd.validate.registry import (
    blob_counts, canonical_axis, checker, require, shape_text,
)

blob_counts("Dropout")
blob_counts("Split", bottoms=(1, 1), tops=(1, None))
blob_counts("Input", bottoms=(0, 0), tops=(1, None))
blob_counts("Silence", bottoms=(1, None), tops=(0, 0))


def _count(shape) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def _not_in_place(layer) -> None:
    require(layer.top[0] != layer.bottom[0], "top", f"{layer.type} does not allow in-place computation")


@checker("Concat", bottoms=(1, None), tops=(1, 1))
def concat(layer, inputs):
    param = layer.concat_param
    require(not (param.HasField("axis") and param.HasField("concat_dim")), "axis",
            "give axis or concat_dim, not both")
    ndim = len(inputs[0])
    if param.HasField("concat_dim"):
        require(param.concat_dim < ndim, "concat_dim", f"{param.concat_dim} is out of range for a {ndim}-D input")
        axis = param.concat_dim
    else:
        axis = canonical_axis(param.axis, ndim, "axis")
    for index, shape in enumerate(inputs[1:], start=1):
        require(len(shape) == ndim, f"bottom {index}", f"all inputs must have the same number of axes "
                                                       f"({shape_text(shape)} vs {shape_text(inputs[0])})")
        require(all(a == b for i, (a, b) in enumerate(zip(shape, inputs[0])) if i != axis), f"bottom {index}",
                f"all inputs must have the same shape except on axis {axis} "
                f"({shape_text(shape)} vs {shape_text(inputs[0])})")


@checker("Slice", bottoms=(1, 1), tops=(1, None))
def slice_(layer, inputs):
    param = layer.slice_param
    require(not (param.HasField("axis") and param.HasField("slice_dim")), "axis", "give axis or slice_dim, not both")
    shape = inputs[0]
    if param.HasField("slice_dim"):
        require(param.slice_dim < len(shape), "slice_dim", f"{param.slice_dim} is out of range for a "
                                                           f"{len(shape)}-D input")
        axis = param.slice_dim
    else:
        axis = canonical_axis(param.axis, len(shape), "axis")
    size, tops, points = shape[axis], len(layer.top), list(param.slice_point)
    if points:
        require(len(points) == tops - 1, "slice_point", f"needs one point fewer than the {tops} tops, "
                                                        f"has {len(points)}")
        require(tops <= size, "top", f"{tops} tops cannot slice an axis of size {size}")
        bounds = [0] + points
        require(all(b > a for a, b in zip(bounds, bounds[1:])), "slice_point",
                f"points {points} must be positive and increasing")
        require(points[-1] < size, "slice_point", f"last point {points[-1]} must lie inside the axis of size {size}")
    else:
        require(size % tops == 0, "top", f"{tops} tops should evenly divide the input axis ({size})")


@checker("Permute")
def permute(layer, inputs):
    ndim = len(inputs[0])
    order = list(layer.permute_param.order)
    seen = set()
    for axis in order:
        require(axis < ndim, "order", f"axis {axis} should be less than the input dimension ({ndim})")
        require(axis not in seen, "order", f"axis {axis} is repeated")
        seen.add(axis)


@checker("Flatten")
def flatten(layer, inputs):
    _not_in_place(layer)
    ndim = len(inputs[0])
    start = canonical_axis(layer.flatten_param.axis, ndim, "axis")
    end = canonical_axis(layer.flatten_param.end_axis, ndim, "end_axis")
    require(start <= end, "end_axis", f"end_axis {end} comes before axis {start}")


@checker("Reshape")
def reshape(layer, inputs):
    _not_in_place(layer)
    param, shape = layer.reshape_param, inputs[0]
    dims = list(param.shape.dim)
    require(dims.count(-1) <= 1, "shape", "at most one dimension may be -1")
    require(all(d >= -1 for d in dims), "shape", f"dimensions must be -1, 0 or positive, got {dims}")
    ndim = len(shape)
    start = param.axis + ndim + 1 if param.axis < 0 else param.axis
    require(0 <= start <= ndim, "axis", f"axis {param.axis} is out of range for a {ndim}-D input")
    require(param.num_axes >= -1, "num_axes", "must be >= 0, or -1 for all")
    end = ndim if param.num_axes == -1 else start + param.num_axes
    require(end <= ndim, "num_axes", f"axis + num_axes = {end} is out of range for a {ndim}-D input")
    for i, dim in enumerate(dims):
        if dim == 0:
            require(start + i < ndim, "shape", f"dimension {i} is 0 (copy) but the input has no axis {start + i}")
    replaced = shape[start:end]
    new = [replaced[i] if d == 0 and i < len(replaced) else d for i, d in enumerate(dims)]
    explicit = _count([d for d in new if d != -1]) * _count(shape[:start]) * _count(shape[end:])
    total = _count(shape)
    if -1 in new:
        require(explicit > 0 and total % explicit == 0, "shape",
                f"input count {total} is not divisible by the product of the given dimensions ({explicit})")
    else:
        require(explicit == total, "shape", f"output count {explicit} must match input count {total} "
                                            f"(input {shape_text(shape)})")


@checker("Crop", bottoms=(2, 2))
def crop(layer, inputs):
    param = layer.crop_param
    source, reference = inputs
    ndim = len(source)
    require(len(reference) == ndim, "bottom 1", f"reference {shape_text(reference)} has a different number of "
                                                f"axes than {shape_text(source)}")
    start = canonical_axis(param.axis, ndim, "axis")
    offsets = list(param.offset)
    if len(offsets) > 1:
        require(start + len(offsets) == ndim, "offset", "give one offset, or one per axis from `axis` on")
    for i in range(start, ndim):
        offset = 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - start]
        require(source[i] - offset >= reference[i], "offset",
                f"the crop of axis {i} is out of bounds: size {reference[i]} at offset {offset} in {source[i]}")


@checker("Eltwise", bottoms=(2, None), tops=(1, 1))
def eltwise(layer, inputs):
    param = layer.eltwise_param
    require(not param.coeff or len(param.coeff) == len(inputs), "coeff",
            f"takes one coefficient per bottom ({len(inputs)}), has {len(param.coeff)}")
    require(not (param.operation == param.PROD and param.coeff), "coeff",
            "Eltwise PROD takes no coefficients")
    for index, shape in enumerate(inputs[1:], start=1):
        require(tuple(shape) == tuple(inputs[0]), f"bottom {index}",
                f"all inputs must have the same shape ({shape_text(shape)} vs {shape_text(inputs[0])})")


@checker("ArgMax")
def argmax(layer, inputs):
    param, shape = layer.argmax_param, inputs[0]
    require(param.top_k >= 1, "top_k", "must be at least 1")
    if param.HasField("axis"):
        axis = canonical_axis(param.axis, len(shape), "axis")
        require(param.top_k <= shape[axis], "top_k", f"{param.top_k} is more than the {shape[axis]} values on "
                                                     f"axis {axis}")
    else:
        require(param.top_k <= _count(shape[1:]), "top_k", f"{param.top_k} is more than the "
                                                           f"{_count(shape[1:])} values per item")


@checker("Tile")
def tile(layer, inputs):
    require(layer.tile_param.tiles > 0, "tiles", "number of tiles must be positive")
    canonical_axis(layer.tile_param.axis, len(inputs[0]), "axis")


@checker("Reduction")
def reduction(layer, inputs):
    canonical_axis(layer.reduction_param.axis, len(inputs[0]), "axis")
