"""Fold BatchNorm and Scale layers into the Convolution, Deconvolution or
InnerProduct that produces their input.

At inference a BatchNorm is a per-channel affine map y = a*x + c, and so is a
Scale; a per-output-channel affine map after a linear layer is the same as
that linear layer with its weights scaled by `a` and its bias set to a*b + c.
Folding removes the layers without changing what the net computes (up to
float32 rounding).

    result = fold_batchnorm(Net.load("deploy.prototxt", "snapshot.caffemodel"))
    result.skipped          # [SkippedFold(layer, type, reason), ...]
    merge_bn("deploy.prototxt", "snapshot.caffemodel", "out/no_bn")   # files + check

A layer is folded only when that is exactly right; otherwise it stays and the
reason is reported (see `_why_not_foldable`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from caffessd import caffe_pb2, protoio
from caffessd.errors import CaffessdError
from caffessd.layers import DATA_LAYER_TYPES
from caffessd.net import Net
from caffessd.util.files import atomic_write_many
from caffessd.util.outputs import file_name_for, is_folder_target, refuse_overwriting
from caffessd.merge_bn import verify as merge_bn_verify
from caffessd.netprep import carry_notes

FOLD_TARGETS = ("Convolution", "Deconvolution", "InnerProduct")
FOLDABLE = ("BatchNorm", "Scale")
DEFAULT_BN_EPS = 1e-5  # BatchNormParameter.eps default in caffe.proto
NET_INPUT = -1  # writer index of blobs the net declares as inputs


@dataclass
class SkippedFold:
    """A BatchNorm or Scale layer that was kept, and why."""

    layer: str
    type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.type} '{self.layer}': {self.reason}"


@dataclass
class Fold:
    """A BatchNorm or Scale layer that was folded into `into`."""

    layer: str
    type: str
    into: str


@dataclass
class FoldResult:
    """The merged deploy net (no blobs in `param`), its weights, and what happened."""

    param: caffe_pb2.NetParameter
    weights: Dict[str, List[np.ndarray]]
    folded: List[Fold] = field(default_factory=list)
    skipped: List[SkippedFold] = field(default_factory=list)

    def net(self) -> Net:
        return Net(self.param, self.weights)

    def caffemodel(self) -> caffe_pb2.NetParameter:
        return protoio.caffemodel_from(self.param, self.weights)


# ---------------------------------------------------------------- blob versions

@dataclass
class _Graph:
    """Who wrote the version of each bottom a layer reads, and who reads each version.

    Caffe reuses blob names (in-place layers), so a blob is identified by
    (index of the layer that wrote it, name); NET_INPUT stands for net inputs.
    """

    writers: List[List[int]]                       # per layer, per bottom
    readers: Dict[Tuple[int, str], List[int]]      # version -> reading layers, in order

    @classmethod
    def build(cls, layers: Sequence[caffe_pb2.LayerParameter]) -> "_Graph":
        current: Dict[str, int] = {}
        writers, readers = [], {}
        for i, layer in enumerate(layers):
            row = []
            for bottom in layer.bottom:
                writer = current.get(bottom, NET_INPUT)
                row.append(writer)
                readers.setdefault((writer, bottom), []).append(i)
            writers.append(row)
            for top in layer.top:
                current[top] = i
        return cls(writers, readers)


# ---------------------------------------------------------------- per-channel affine maps

def batchnorm_affine(layer: caffe_pb2.LayerParameter, blobs: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """(a, c) with BatchNorm(x) = a*x + c per channel, as Caffe computes it at test time.

    Caffe stores running sums: mean and variance are blobs 0 and 1 multiplied by
    1/blobs[2][0]. A factor of 0 (statistics never accumulated) makes that
    multiplier 0 rather than a division by zero, so mean and variance are 0 and
    the layer computes x / sqrt(eps); Caffe and OpenCV both do exactly this.
    """
    mean, variance, factor = (np.asarray(b, dtype=np.float64) for b in blobs[:3])
    factor = float(factor.ravel()[0])
    scale = 0.0 if factor == 0 else 1.0 / factor
    eps = layer.batch_norm_param.eps if layer.batch_norm_param.HasField("eps") else DEFAULT_BN_EPS
    denominator = variance.ravel() * scale + eps
    if np.any(denominator <= 0) or not np.all(np.isfinite(denominator)):
        raise ValueError("variance + eps is not positive for every channel")
    a = 1.0 / np.sqrt(denominator)
    return a, -mean.ravel() * scale * a


def scale_affine(blobs: List[np.ndarray], gamma_axes: Sequence[int], channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """(a, c) per channel for a Scale layer whose gamma broadcasts as `gamma_axes`."""
    gamma = np.asarray(blobs[0], dtype=np.float64).ravel()
    a = np.broadcast_to(gamma, (channels,)) if gamma.size == 1 else gamma
    if len(blobs) > 1:
        beta = np.asarray(blobs[1], dtype=np.float64).ravel()
        c = np.broadcast_to(beta, (channels,)) if beta.size == 1 else beta
    else:
        c = np.zeros(channels)
    return np.array(a, dtype=np.float64), np.array(c, dtype=np.float64)


def scale_broadcast_axes(layer: caffe_pb2.LayerParameter, gamma_shape: Sequence[int], ndim: int) -> List[int]:
    """The full broadcast shape of a Scale's gamma over an ndim-d input."""
    axis = layer.scale_param.axis
    axis = axis + ndim if axis < 0 else axis
    full = [1] * ndim
    for offset, dim in enumerate(gamma_shape):
        full[axis + offset] = int(dim)
    return full


# ---------------------------------------------------------------- folding into weights

def fold_into_weights(producer: caffe_pb2.LayerParameter, blobs: List[np.ndarray],
                      a: np.ndarray, c: np.ndarray) -> List[np.ndarray]:
    """New [weight, bias] of `producer` so that it computes a*old(x) + c per output channel."""
    weight = np.asarray(blobs[0], dtype=np.float64)
    channels = a.size
    bias = np.asarray(blobs[1], dtype=np.float64).ravel() if len(blobs) > 1 else np.zeros(channels)
    if producer.type == "Convolution":
        # (C_out, C_in/group, *kernel): output channels on axis 0.
        weight = weight * a.reshape((channels,) + (1,) * (weight.ndim - 1))
    elif producer.type == "Deconvolution":
        # (C_in, C_out/group, *kernel): input channel i of group g = i // (C_in/group)
        # feeds output channel g*(C_out/group) + j through weight[i, j].
        group = producer.convolution_param.group or 1
        c_in, per_group = weight.shape[0], weight.shape[1]
        kernel = weight.shape[2:]
        grouped = weight.reshape((group, c_in // group, per_group) + kernel)
        grouped = grouped * a.reshape((group, 1, per_group) + (1,) * len(kernel))
        weight = grouped.reshape(weight.shape)
    elif producer.inner_product_param.transpose:
        weight = weight * a.reshape(1, channels)   # (K, C_out)
    else:
        weight = weight * a.reshape(channels, 1)   # (C_out, K)
    return [weight.astype(np.float32), (a * bias + c).astype(np.float32)]


def _set_bias_term(producer: caffe_pb2.LayerParameter) -> None:
    if producer.type == "InnerProduct":
        producer.inner_product_param.bias_term = True
    else:
        producer.convolution_param.bias_term = True


# ---------------------------------------------------------------- deciding what can fold

def _describe(layer: caffe_pb2.LayerParameter) -> str:
    return f"{layer.type} '{layer.name}'"


def _why_not_foldable(i: int, layers, graph: _Graph, weights, in_shapes) -> Optional[str]:
    """None if layers[i] (a BatchNorm or Scale) folds exactly into its producer, else why not."""
    layer = layers[i]
    if len(layer.bottom) != 1:
        return "it scales by a second input blob, not by learned weights" if layer.type == "Scale" \
            else "it has more than one input"
    if len(layer.top) != 1:
        return "it has more than one output"
    if layer.type == "BatchNorm" and layer.batch_norm_param.HasField("use_global_stats") \
            and not layer.batch_norm_param.use_global_stats:
        return "use_global_stats is false: it normalises with batch statistics even at test time"
    bottom = layer.bottom[0]
    ndim = len(in_shapes[i][0])
    if ndim < 2:
        return f"its input '{bottom}' has no channel axis"
    if layer.type == "Scale":
        full = scale_broadcast_axes(layer, weights[layer.name][0].shape, ndim)
        if any(dim != 1 for axis, dim in enumerate(full) if axis != 1):
            return "its scale varies along axes other than the channel axis (scale_param axis/num_axes)"

    writer, bottom, reader, reason = _through_spatial_slices(i, graph.writers[i][0], bottom, layers, graph, in_shapes)
    if reason:
        return reason
    if writer == NET_INPUT:
        return f"it reads the net input '{bottom}' directly; there is no layer to fold into"
    producer = layers[writer]
    if producer.type in DATA_LAYER_TYPES or producer.type == "Input":
        return f"it follows the data layer {_describe(producer)}; there is no layer to fold into"
    if producer.type in FOLDABLE:
        return f"it follows {_describe(producer)}, which could not be folded"
    if producer.type not in FOLD_TARGETS:
        return f"it follows {_describe(producer)}, which has no weights to fold into " \
               f"(only {', '.join(FOLD_TARGETS)} can absorb it)"
    if len(producer.top) != 1 or len(producer.bottom) != 1:
        return f"its producer {_describe(producer)} has several inputs or outputs"
    if producer.type == "InnerProduct":
        axis = producer.inner_product_param.axis
        if (axis + len(in_shapes[writer][0]) if axis < 0 else axis) != 1:
            return f"its producer {_describe(producer)} has axis != 1, so its outputs are not on the channel axis"
    others = [layers[j].name for j in graph.readers[(writer, bottom)] if j != reader]
    if others:
        return f"the output '{bottom}' of {_describe(producer)} also feeds " + \
               ", ".join(f"'{name}'" for name in others) + "; folding would change what they read"
    shared = _shared_param_owner(producer, layers)
    if shared:
        return f"its producer {_describe(producer)} shares weights with '{shared}'"
    top, read = layer.top[0], layer.bottom[0]
    if top != read:
        for j in range(graph.writers[i][0] + 1, i):
            if top in layers[j].bottom or top in layers[j].top:
                return f"moving blob '{top}' up to {_describe(producer)} would clash with layer '{layers[j].name}'"
    return None


def _through_spatial_slices(i, writer, blob, layers, graph: _Graph, in_shapes):
    """Walk up from layers[i] through Slice layers that cut spatial axes only.

    TensorFlow-style padding (gen-model --tf-pad) puts Slices between a
    convolution and its BatchNorm; a per-channel affine map commutes with
    spatial cropping, so the BatchNorm can still fold into the convolution,
    provided the cut-off margins are only discarded (read by Silence or by
    nobody). Returns (writer index, blob it wrote, the layer reading that blob
    on the way to layers[i], reason it cannot pass or None).
    """
    reader = i
    while writer != NET_INPUT and layers[writer].type == "Slice":
        cut = layers[writer]
        others = [j for j in graph.readers[(writer, blob)] if j != reader]
        if others:
            return writer, blob, reader, f"the output '{blob}' of {_describe(cut)} also feeds '{layers[others[0]].name}'"
        ndim = len(in_shapes[writer][0])
        param = cut.slice_param
        axis = param.axis if param.HasField("axis") or not param.HasField("slice_dim") else param.slice_dim
        if (axis + ndim if axis < 0 else axis) < 2:
            return writer, blob, reader, f"it follows {_describe(cut)}, which slices channels, not space"
        for top in cut.top:
            if top != blob and any(layers[j].type != "Silence" for j in graph.readers.get((writer, top), [])):
                return writer, blob, reader, f"it follows {_describe(cut)}, whose other output '{top}' is used"
        reader, blob, writer = writer, cut.bottom[0], graph.writers[writer][0]
    return writer, blob, reader, None


def _shared_param_owner(producer, layers) -> Optional[str]:
    names = {spec.name for spec in producer.param if spec.name}
    for other in layers:
        if other is not producer and names & {spec.name for spec in other.param if spec.name}:
            return other.name
    return None


def _affine(layer, blobs, channels: int, ndim: int) -> Tuple[np.ndarray, np.ndarray]:
    if layer.type == "BatchNorm":
        return batchnorm_affine(layer, blobs)
    return scale_affine(blobs, scale_broadcast_axes(layer, blobs[0].shape, ndim), channels)


def fold_batchnorm(net: Net) -> FoldResult:
    """Fold every BatchNorm and Scale that can be folded exactly; report the rest.

    `net` needs weights for all its layers (Net.load(..., strict=True)). The
    result's `param` is the deploy net without the folded layers; producers
    that had no bias get one (bias_term: true), and a folded layer's output
    blob becomes the producer's output so every later layer still finds it.
    """
    layers = [_copy_layer(layer) for layer in net.param.layer]
    weights = {name: [np.array(b) for b in blobs] for name, blobs in net.weights.items()}
    missing = [info.name for info in net.walk(with_weights=False)
               if info.param_shapes and info.name not in weights]
    if missing:
        raise CaffessdError(f"no weights for layer '{missing[0]}'; merge-bn needs a caffemodel with every layer's blobs")
    folded: List[Fold] = []
    skipped: Dict[str, SkippedFold] = {}
    while True:
        graph = _Graph.build(layers)
        in_shapes = [info.input_shapes for info in
                     Net(_with_layers(net.param, layers), source=net.source).walk(with_weights=False)]
        for i, layer in enumerate(layers):
            if layer.type not in FOLDABLE or layer.name in skipped:
                continue
            reason = _why_not_foldable(i, layers, graph, weights, in_shapes)
            if reason is None:
                reason = _fold(i, layers, graph, weights, in_shapes[i][0])
            if reason is not None:
                skipped[layer.name] = SkippedFold(layer.name, layer.type, reason)
                continue
            folded.append(Fold(layer.name, layer.type, layers[_fold_target(i, layers, graph)].name))
            del layers[i]
            break  # indices shifted: rebuild the graph
        else:
            break
    result = FoldResult(_with_layers(net.param, layers), weights, folded, list(skipped.values()))
    _check_consistent(result, net.source)
    return result


def _fold(i: int, layers, graph: _Graph, weights, bottom_shape) -> Optional[str]:
    """Fold layers[i] into its producer in place (the caller deletes layers[i])."""
    layer = layers[i]
    source = layers[graph.writers[i][0]]  # the producer itself, or the last Slice on the way
    producer = layers[_fold_target(i, layers, graph)]
    try:
        a, c = _affine(layer, weights[layer.name], bottom_shape[1], len(bottom_shape))
    except ValueError as exc:
        return str(exc)
    weights[producer.name] = fold_into_weights(producer, weights[producer.name], a, c)
    _set_bias_term(producer)
    # The blob the folded layer read now carries its result under its top's name.
    source.top[list(source.top).index(layer.bottom[0])] = layer.top[0]
    del weights[layer.name]
    return None


def _fold_target(i: int, layers, graph: _Graph) -> int:
    """Index of the layer whose weights absorb layers[i] (past any spatial Slices)."""
    writer = graph.writers[i][0]
    while layers[writer].type == "Slice":
        writer = graph.writers[writer][0]
    return writer


def _with_layers(base: caffe_pb2.NetParameter, layers) -> caffe_pb2.NetParameter:
    param = caffe_pb2.NetParameter()
    param.CopyFrom(base)
    del param.layer[:]
    param.layer.extend(layers)
    return param


def _copy_layer(layer: caffe_pb2.LayerParameter) -> caffe_pb2.LayerParameter:
    copy = caffe_pb2.LayerParameter()
    copy.CopyFrom(layer)
    del copy.blobs[:]
    return copy


def _check_consistent(result: FoldResult, source) -> None:
    """The merged net must infer shapes and match its weights, or folding has a bug."""
    merged = Net(result.param, source=source)
    for info in merged.walk(with_weights=False):
        stored = [tuple(w.shape) for w in result.weights.get(info.name, [])]
        if stored and stored != [tuple(s) for s in info.param_shapes]:
            raise AssertionError(f"merged layer '{info.name}' has blobs {stored}, expected {info.param_shapes}")


# ---------------------------------------------------------------- files

@dataclass
class MergeReport:
    """What `merge_bn` did: the fold, the verification rows, the files written."""

    result: FoldResult
    checks: list = field(default_factory=list)     # [OutputDiff] from caffessd.merge_bn.verify
    prototxt: Optional[Path] = None
    caffemodel: Optional[Path] = None


def output_paths(out_prefix, prototxt_out=None, caffemodel_out=None, net_name: str = "merged") -> Tuple[Path, Path]:
    """(prototxt, caffemodel) paths; a folder as prefix (existing, or with a
    trailing /) means files named after the net inside it."""
    prefix = os.fspath(out_prefix)
    if prefix and is_folder_target(prefix):
        prefix = os.path.join(prefix, file_name_for(net_name, "merged"))
    return (Path(prototxt_out) if prototxt_out else Path(prefix + ".prototxt"),
            Path(caffemodel_out) if caffemodel_out else Path(prefix + ".caffemodel"))


def merge_bn(prototxt, caffemodel, out_prefix=None, verify: bool = True, image=None,
             tolerance: float = 1e-4, prototxt_out=None, caffemodel_out=None, seed: int = 0,
             runner: Optional[Callable] = None, progress: Optional[Callable[[str], None]] = None) -> MergeReport:
    """Fold BatchNorm/Scale of a deploy net and write `<prefix>.prototxt` and `<prefix>.caffemodel`.

    With `verify`, both nets run on a fixed random input (seeded by `seed`) and
    on `image` (a path, or a list of paths) and every checked output must agree
    within `tolerance` (max abs difference relative to the output's largest
    magnitude); otherwise VerificationError is raised and nothing is written.
    `runner` overrides the engine (see caffessd.merge_bn.verify.default_runner).
    """
    if out_prefix is None and not (prototxt_out and caffemodel_out):
        raise CaffessdError("merge_bn needs out_prefix or both prototxt_out and caffemodel_out")
    net = Net.load(prototxt, caffemodel, strict=True)
    prototxt_path, caffemodel_path = output_paths(out_prefix, prototxt_out, caffemodel_out,
                                                  net.name or Path(prototxt).stem)
    if prototxt_path.resolve() == caffemodel_path.resolve():
        raise CaffessdError(f"the merged prototxt and caffemodel would both be written to {prototxt_path}")

    refuse_overwriting([("the merged prototxt", prototxt_path), ("the merged caffemodel", caffemodel_path)],
                       [("prototxt", prototxt), ("caffemodel", caffemodel)] + [("image", i) for i in _images(image)])
    result = fold_batchnorm(net)
    report = MergeReport(result)
    if verify:
        images = [] if image is None else ([image] if isinstance(image, (str, os.PathLike)) else list(image))
        report.checks = merge_bn_verify.verify_fold(net, result.net(), images=images, tolerance=tolerance,
                                                    seed=seed, runner=runner, progress=progress)
    write_merged(result, prototxt_path, caffemodel_path, source_prototxt=prototxt)
    report.prototxt, report.caffemodel = prototxt_path, caffemodel_path
    return report


def _images(image):
    if image is None:
        return []
    return [image] if isinstance(image, (str, os.PathLike)) else list(image)


def write_merged(result: FoldResult, prototxt_path, caffemodel_path, source_prototxt=None) -> None:
    """Write both files together: if either cannot be written, neither is.
    With `source_prototxt`, its caffessd notes (preprocessing) are carried over."""
    text = protoio.prototxt_text(result.param)
    if source_prototxt is not None:
        text = carry_notes(source_prototxt, text)
    atomic_write_many([(prototxt_path, text),
                               (caffemodel_path, protoio.serialize(result.caffemodel()))])
