"""Layers that move or combine data: Eltwise, Concat, Slice, Split, Flatten,
Reshape, Permute, Crop, Dropout, Silence.

ncnn blobs are one image: Caffe's axis k (k >= 1) is ncnn's axis k - 1,
counted from the outermost of ncnn's c, (d,) h, w. Shapes are known at export
time, so Flatten/Reshape/Slice get explicit sizes rather than Caffe's 0/-1
shorthands, which ncnn reads differently (its 0 copies the ncnn dimension
of the same name, not the Caffe axis of the same index).
"""
from __future__ import annotations

from caffessd import caffe_pb2
from caffessd.export.ncnn.registry import ncnn_axis, refuse, writer
from caffessd.layers import permute_order

# ncnn's Permute order types (src/layer/permute.cpp), by the input dimension
# each output dimension takes, innermost first.
PERMUTE_TYPES = {
    2: ["w h", "h w"],
    3: ["w h c", "h w c", "w c h", "c w h", "h c w", "c h w"],
    4: ["w h d c", "h w d c", "w d h c", "d w h c", "h d w c", "d h w c", "w h c d", "h w c d", "w c h d",
        "c w h d", "h c w d", "c h w d", "w d c h", "d w c h", "w c d h", "c w d h", "d c w h", "c d w h",
        "h d c w", "d h c w", "h c d w", "c h d w", "d c h w", "c d h w"],
}
AXIS_NAMES = {2: "h w", 3: "c h w", 4: "c d h w"}   # ncnn dims, outermost first


def _ncnn_rank(info, shape) -> int:
    if len(shape) > 5:
        raise refuse(info, f"a {len(shape)}-d blob (ncnn holds at most 4 dimensions per image)")
    return len(shape) - 1


def shape_params(shape) -> dict:
    """Reshape parameters for a Caffe shape (batch first): w, h, (d,) c."""
    dims = [int(d) for d in shape[1:]]
    keys = {1: [0], 2: [1, 0], 3: [2, 1, 0], 4: [2, 11, 1, 0]}[len(dims)]
    return dict(zip(keys, dims))


@writer("Eltwise")
def eltwise(graph, info):
    """Same operation codes in both (PROD 0, SUM 1, MAX 2)."""
    param = info.layer.eltwise_param
    params = {0: int(param.operation)}
    if param.operation == caffe_pb2.EltwiseParameter.SUM and param.coeff:
        params[1] = [float(c) for c in param.coeff]
    graph.emit(info, "Eltwise", params)


@writer("Concat")
def concat(graph, info):
    param = info.layer.concat_param
    axis = param.axis if param.HasField("axis") or not param.HasField("concat_dim") else param.concat_dim
    graph.emit(info, "Concat", {0: ncnn_axis(info, int(axis), len(info.input_shapes[0]))})


@writer("Slice")
def slice_layer(graph, info):
    param = info.layer.slice_param
    axis = param.axis if param.HasField("axis") or not param.HasField("slice_dim") else param.slice_dim
    rank = len(info.input_shapes[0])
    axis = axis + rank if axis < 0 else axis
    sizes = [int(shape[axis]) for shape in info.output_shapes]
    graph.emit(info, "Slice", {0: sizes, 1: ncnn_axis(info, int(axis), rank)})


@writer("Split")
def split(graph, info):
    graph.emit(info, "Split")


@writer("Flatten", "Reshape")
def reshape(graph, info):
    """Flatten to one dimension is ncnn's Flatten; any other shape an explicit Reshape."""
    source, target = info.input_shapes[0], info.output_shapes[0]
    if target[0] != source[0]:
        raise refuse(info, "it moves data into or out of the batch axis")
    _ncnn_rank(info, target)
    if len(target) == 2:
        graph.emit(info, "Flatten")
    else:
        graph.emit(info, "Reshape", shape_params(target))


@writer("Permute")
def permute(graph, info):
    rank = len(info.input_shapes[0])
    order = permute_order(info.layer.permute_param, rank)
    if order[0] != 0:
        raise refuse(info, "it moves the batch axis")
    if order == list(range(rank)):
        graph.emit(info, "Permute", {0: 0})
        return
    dims = _ncnn_rank(info, info.input_shapes[0])
    names = AXIS_NAMES.get(dims)
    if names is None:
        raise refuse(info, "a permutation of a 1-d blob")
    names = names.split()
    wanted = " ".join(names[order[k] - 1] for k in range(rank - 1, 0, -1))
    graph.emit(info, "Permute", {0: PERMUTE_TYPES[dims].index(wanted)})


@writer("Crop")
def crop(graph, info):
    """Numpy-style starts/ends on the first input only (the second only gives the size)."""
    param = info.layer.crop_param
    source, reference = info.input_shapes[0], info.input_shapes[1]
    rank = len(source)
    axis = int(param.axis) + rank if param.axis < 0 else int(param.axis)
    offsets = [int(o) for o in param.offset] or [0]
    if len(offsets) == 1:
        offsets = offsets * (rank - axis)
    axes = list(range(axis, rank))
    for a in axes:
        ncnn_axis(info, a, rank)
    starts = offsets
    ends = [o + int(reference[a]) for o, a in zip(offsets, axes)]
    params = {9: starts, 10: ends, 11: [a - 1 for a in axes]}
    graph.emit(info, "Crop", params, bottoms=[info.layer.bottom[0]])


@writer("Dropout")
def dropout(graph, info):
    """Identity at test time (Caffe scales by 1 / (1 - ratio) while training)."""
    graph.emit(info, "Dropout")


@writer("Silence")
def silence(graph, info):
    """Consumes its bottoms and writes nothing: no ncnn layer."""
