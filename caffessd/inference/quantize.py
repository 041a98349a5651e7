"""Static int8 quantization of a caffessd ONNX detector with onnxruntime's
quantization tools: QDQ format, per-channel int8 weights, uint8 activations
calibrated on real images preprocessed as the model's metadata says.

Only the convolutional part is quantized. Everything after the last
convolution (head flatten/concat, softmax, the PriorBox constants, box
decoding and NMS of DetectionOutput) stays float: those nodes are cheap, and
priors or box offsets rounded to 8 bits would move every box.

    report = quantize_model("ssd.onnx", "calib_images/", "ssd-int8.onnx", images=100)
    for line in report.lines(): print(line)
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set

import numpy as np

from caffessd.errors import CaffessdError, FormatError
from caffessd.image.preprocess import Preprocessing
from caffessd.util.files import atomic_write, check_writable

METHODS = ("minmax", "entropy", "percentile")
# Ops whose presence marks the part worth quantizing: everything they depend on.
COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
# Op types given int8 kernels. Mul stays out: SSD's Normalize scales channels
# with a (1, C, 1, 1) constant that per-channel quantization mis-shapes, and a
# float Mul between int8 convolutions costs little.
QUANTIZED_OPS = sorted(COMPUTE_OPS | {"Add", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
                                      "Concat", "Resize", "Sigmoid"})


@dataclass
class OutputDifference:
    """How far the int8 model's tensor is from the fp32 model's over the calibration images."""

    name: str
    max_abs: float
    mean_abs: float
    fp32_range: float  # max |fp32 value|: scale for reading max_abs

    def line(self) -> str:
        relative = self.max_abs / self.fp32_range if self.fp32_range else 0.0
        return (f"  {self.name:<28} max |int8 - fp32| {self.max_abs:.4g} ({100 * relative:.2f}% of range "
                f"{self.fp32_range:.4g}), mean {self.mean_abs:.4g}")


@dataclass
class QuantizeReport:
    output: Path
    images: int
    method: str
    quantized_nodes: int
    float_nodes: int
    differences: List[OutputDifference] = field(default_factory=list)

    def lines(self) -> List[str]:
        head = (f"wrote {self.output}: int8 QDQ ({self.method} calibration on {self.images} image(s)), "
                f"{self.quantized_nodes} node(s) in the int8 part, {self.float_nodes} kept float")
        return [head, "raw outputs, int8 vs fp32 on the calibration images:"] + [d.line() for d in self.differences]


def model_preprocessing(model, path) -> Preprocessing:
    """The preprocessing stored at export (or the input shape's size, no mean, scale 1)."""
    from caffessd.onnxconv.metadata import read_metadata

    metadata = read_metadata(model)
    if "image_input" in metadata:
        raise FormatError(path, "was exported with --image-input; quantize the blob-input export instead")
    if "input_size" in metadata:
        return Preprocessing.from_metadata(metadata)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or not all(dims[2:]):
        raise FormatError(path, "input size unknown: no caffessd metadata and no fixed 4-d input shape")
    return Preprocessing(width=dims[3], height=dims[2])


def _producers(model) -> Dict[str, object]:
    return {out: node for node in model.graph.node for out in node.output}


def _ancestors(model, nodes: Iterable) -> Set[str]:
    """Names of `nodes` and of every node they depend on."""
    producers = _producers(model)
    seen: Set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(producers[name] for name in node.input if name in producers)
    return seen


def float_nodes(model, keep_float: Sequence[str] = ()) -> List[str]:
    """Node names that stay float: everything not needed by a convolution, plus
    the nodes `keep_float` names (a node name, a Caffe layer name, i.e. the
    part before '#' of caffessd's node names, or a tensor a node writes)."""
    compute = [node for node in model.graph.node if node.op_type in COMPUTE_OPS]
    if not compute:
        raise CaffessdError("the model has no convolution or matrix product to quantize")
    quantizable = _ancestors(model, compute)
    kept = [node.name for node in model.graph.node if node.name not in quantizable]
    for wanted in keep_float:
        matches = [node.name for node in model.graph.node
                   if wanted in (node.name, node.name.split("#")[0]) or wanted in node.output]
        if not matches:
            raise CaffessdError(f"--keep-float: no node or layer named '{wanted}' in the model "
                                f"(layer names are the Caffe layer names, as `caffessd inspect` lists them)")
        kept.extend(m for m in matches if m not in kept)
    return kept


def detection_inputs(model) -> List[str]:
    """The tensors DetectionOutput reads (loc, conf): the raw outputs worth
    comparing. caffessd.onnxconv.ssd starts each image's decoding with nodes
    named `<layer>_img0_loc_pl4` and `<layer>_img0_conf_pc`; a --raw export
    has them as graph outputs `loc` and `conf`."""
    found = []
    # A batch export slices each image's rows out first (`<layer>_loc0`, `<layer>_conf0`): take the whole batch.
    for suffixes in (("_loc0#Slice", "_img0_loc_pl4#Reshape"), ("_conf0#Slice", "_img0_conf_pc#Reshape")):
        for suffix in suffixes:
            hits = [node.input[0] for node in model.graph.node if node.name.endswith(suffix)]
            if hits:
                found.extend(hits)
                break
    if not found:  # a --raw export
        found = [o.name for o in model.graph.output if o.name in ("loc", "conf")]
    return found


def _with_outputs(model, names: Sequence[str]):
    """A copy of `model` that also outputs the tensors `names`."""
    import onnx
    from onnx import helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(helper.make_empty_tensor_value_info(name))
    return copy


def compare_outputs(fp32_model, int8_model, feeds: List[Dict[str, np.ndarray]], names: Sequence[str],
                    threads: Optional[int] = None) -> List[OutputDifference]:
    from caffessd.inference.session import make_session

    sessions = [make_session(_with_outputs(m, names), threads=threads) for m in (fp32_model, int8_model)]
    stats = {name: [0.0, 0.0, 0, 0.0] for name in names}  # max, sum, count, range
    for feed in feeds:
        ours, theirs = (dict(zip(names, s.run(list(names), feed))) for s in sessions)
        for name in names:
            a, b = ours[name], theirs[name]
            if a.shape != b.shape:  # detection rows: their number may differ
                rows = min(a.shape[-2], b.shape[-2]) if a.ndim >= 2 else 0
                a, b = a[..., :rows, :], b[..., :rows, :]
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            entry = stats[name]
            entry[0] = max(entry[0], float(diff.max()) if diff.size else 0.0)
            entry[1] += float(diff.sum())
            entry[2] += diff.size
            entry[3] = max(entry[3], float(np.abs(a).max()) if a.size else 0.0)
    return [OutputDifference(name, s[0], s[1] / max(s[2], 1), s[3]) for name, s in stats.items()]


QUANTIZER_SUFFIXES = ("_scale", "_zero_point", "_quantized", "_QuantizeLinear", "_DequantizeLinear")


def _avoid_quantizer_name_clashes(model) -> None:
    """Rename initializers the quantizer's own names could hit. It calls the
    scale of tensor T `T_scale`; caffessd names Normalize's constant
    `<layer>_scale`, and the layer's output is `<layer>`, so without this the
    two collide and the int8 model fails at run time."""
    tensors = {out for node in model.graph.node for out in node.output} | {i.name for i in model.graph.input}
    renamed = {}
    for init in model.graph.initializer:
        if init.name.endswith(QUANTIZER_SUFFIXES) and any(init.name.startswith(t + "_") for t in tensors):
            renamed[init.name] = init.name + "_const"
            init.name = renamed[init.name]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]


def _batched_feeds(input_name: str, blobs: List[np.ndarray], batch: int) -> List[Dict[str, np.ndarray]]:
    """Feeds of `batch` images each (a fixed-batch export); the last is topped up by repeating images."""
    feeds = []
    for start in range(0, len(blobs), batch):
        group = blobs[start:start + batch]
        group = group + [group[i % len(group)] for i in range(batch - len(group))]
        feeds.append({input_name: np.concatenate(group, axis=0)})
    return feeds


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise CaffessdError(f"calibration method must be one of {', '.join(METHODS)}, not '{method}'")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def quantize_model(model_path, calibrate, output, *, images: int = 100, method: str = "minmax",
                   keep_float: Sequence[str] = (), threads: Optional[int] = None,
                   allow_outside: bool = False) -> QuantizeReport:
    """Quantize the ONNX detector at `model_path` with `images` calibration images
    from `calibrate` (folder or LMDB); write `output` (all or nothing). A link in
    the folder leading out of it is refused unless `allow_outside`."""
    import onnx

    from caffessd.inference.calibration import calibration_blobs
    from caffessd.onnxconv.dynamic_batch import one_image_model, with_dynamic_batch
    from caffessd.onnxconv.metadata import load_model

    if images < 1:
        raise CaffessdError("--images must be at least 1")
    calibration_method = _calibration_method(method)
    check_writable(output)
    model = load_model(model_path)
    # A --batch dynamic export: quantize the one-image graph inside, wrap it again.
    one_image = one_image_model(model)
    model = one_image if one_image is not None else model
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node):
        raise FormatError(model_path, "is already quantized")
    prep = model_preprocessing(model, model_path)
    excluded = float_nodes(model, keep_float)
    blobs = calibration_blobs(calibrate, images, prep, allow_outside=allow_outside)
    input_name = model.graph.input[0].name
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
    feeds = _batched_feeds(input_name, blobs, batch_dim)

    body, tail, boundary = split_float_tail(model, excluded)
    quantized_body = _quantize_body(body, [f[input_name] for f in feeds], input_name, calibration_method,
                                    [name for name in excluded if name not in {n.name for n in tail}])
    quantized = _join(quantized_body, tail, model)
    _carry_metadata(model, quantized, method, len(blobs), keep_float)
    try:
        onnx.checker.check_model(quantized)
    except onnx.checker.ValidationError as exc:
        raise CaffessdError(f"the quantized model fails onnx.checker: {str(exc).splitlines()[0]}") from None
    differences = compare_outputs(model, quantized, feeds, raw_outputs(model, boundary), threads)
    if one_image is not None:
        quantized = with_dynamic_batch(quantized)
    atomic_write(output, quantized.SerializeToString())
    return QuantizeReport(Path(output), len(blobs), method, len(model.graph.node) - len(excluded),
                          len(excluded), differences)


def split_float_tail(model, excluded: Sequence[str]):
    """(body model, tail nodes, boundary tensors): the body holds every node a
    convolution depends on and outputs the tensors the float tail reads.

    onnxruntime's calibrator records every tensor of the ops it calibrates,
    excluded nodes included; NMS outputs change size from image to image and
    break its histograms (entropy, percentile). Quantizing the body alone and
    joining the untouched tail afterwards avoids that."""
    from onnx import helper

    compute = [node for node in model.graph.node if node.op_type in COMPUTE_OPS]
    in_body = _ancestors(model, compute)
    body_nodes = [n for n in model.graph.node if n.name in in_body]
    tail_nodes = [n for n in model.graph.node if n.name not in in_body]
    produced = {out for n in body_nodes for out in n.output}
    wanted = [i for n in tail_nodes for i in n.input] + [o.name for o in model.graph.output]
    boundary = list(dict.fromkeys(name for name in wanted if name in produced))
    used = {i for n in body_nodes for i in n.input}
    graph = helper.make_graph(body_nodes, "body", list(model.graph.input),
                              [helper.make_tensor_value_info(name, onnx_float(), None) for name in boundary],
                              [init for init in model.graph.initializer if init.name in used])
    body = helper.make_model(graph, opset_imports=list(model.opset_import))
    body.ir_version = model.ir_version
    return body, tail_nodes, boundary


def onnx_float():
    import onnx

    return onnx.TensorProto.FLOAT


def _quantize_body(body, blobs: List[np.ndarray], input_name: str, calibration_method, excluded: List[str]):
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from caffessd.inference.calibration import BlobReader

    _avoid_quantizer_name_clashes(body)
    # onnxruntime's calibrators print their progress; keep stdout for results.
    with tempfile.TemporaryDirectory(prefix="caffessd-quant-") as work, contextlib.redirect_stdout(sys.stderr):
        # Paths, not the ModelProto: quantize_static moves a proto's weights to external data in place.
        source_path, quantized_path = os.path.join(work, "fp32.onnx"), os.path.join(work, "int8.onnx")
        onnx.save(body, source_path)
        quantize_static(source_path, quantized_path, BlobReader(input_name, blobs),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=excluded,
                        calibrate_method=calibration_method, extra_options={"CalibTensorRangeSymmetric": False})
        return onnx.load(quantized_path)


def _join(quantized_body, tail_nodes, original):
    """The quantized body plus the float tail, with the original's inputs and outputs."""
    from onnx import helper

    graph = quantized_body.graph
    tail_inputs = {i for n in tail_nodes for i in n.input}
    have = {init.name for init in graph.initializer}
    initializers = list(graph.initializer) + [init for init in original.graph.initializer
                                               if init.name in tail_inputs and init.name not in have]
    joined = helper.make_graph(list(graph.node) + list(tail_nodes), original.graph.name, list(original.graph.input),
                               list(original.graph.output), initializers)
    model = helper.make_model(joined, opset_imports=list(quantized_body.opset_import))
    model.ir_version = quantized_body.ir_version
    model.producer_name, model.producer_version = original.producer_name, original.producer_version
    return model


def raw_outputs(model, boundary: Sequence[str]) -> List[str]:
    """What DetectionOutput reads (loc, conf), else the float tail's inputs."""
    found = detection_inputs(model)
    return found or list(boundary)


def _carry_metadata(source, target, method: str, images: int, keep_float: Sequence[str]) -> None:
    """Preprocessing, labels and conversion facts go over unchanged, so detect
    and eval take the int8 model as they take the fp32 one."""
    from caffessd.onnxconv.metadata import set_metadata

    present = {p.key for p in target.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in present:
            entry = target.metadata_props.add()
            entry.key, entry.value = prop.key, prop.value
    set_metadata(target, {"quantization": {"format": "QDQ", "weights": "int8 per-channel",
                                           "activations": "uint8", "method": method, "images": images,
                                           "keep_float": list(keep_float)}})
