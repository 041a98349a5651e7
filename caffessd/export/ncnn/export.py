"""export_ncnn: a Caffe deploy net to NAME.param, NAME.bin and the
NAME.caffessd.json sidecar (preprocessing, labels, DetectionOutput settings
and which blobs to feed and extract), written together or not at all."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from caffessd import protoio
from caffessd.errors import CaffessdError
from caffessd.export.ncnn.converter import NcnnModel, to_ncnn
from caffessd.inference.engines.sidecar import sidecar_path, sidecar_text
from caffessd.merge_bn import fold_batchnorm
from caffessd.net import Net
from caffessd.onnxconv.facts import export_facts, net_metadata
from caffessd.util.files import atomic_write_many, check_writable
from caffessd.util.outputs import check_outputs, file_name_for

PARAM_SUFFIX, BIN_SUFFIX = ".param", ".bin"


@dataclass
class NcnnExport:
    param_path: Path
    bin_path: Path
    sidecar_path: Path
    model: NcnnModel
    folded: List[str]       # BatchNorm/Scale layers folded away (--fold-bn)
    kept: List[str]         # those that could not be, with the reason


def output_paths(output, net_name: str) -> Tuple[Path, Path, Path]:
    """(NAME.param, NAME.bin, NAME.caffessd.json) for `-o`: a folder (NAME from
    the net's name) or a path ending in .param."""
    output = Path(output)
    if output.suffix.lower() == PARAM_SUFFIX:
        param = output
    else:
        param = output / (file_name_for(net_name, "model") + PARAM_SUFFIX)
    return param, param.with_suffix(BIN_SUFFIX), sidecar_path(param)


def planned_paths(prototxt, output) -> Tuple[Path, Path, Path]:
    """The three output paths, from the prototxt's name without loading weights."""
    return output_paths(output, protoio.read_net(prototxt, binary_ok=False).name or Path(prototxt).stem)


def export_ncnn(prototxt, caffemodel, output, *, raw: bool = False, fp16: bool = False, fold_bn: bool = False,
                metadata: Optional[dict] = None, input_size: Optional[Tuple[int, int]] = None) -> NcnnExport:
    """Convert and write. `metadata`: preprocessing and labels to record
    (caffessd.commands.export_options.export_metadata; None: the net's own); `input_size`
    (width, height) converts for another input size."""
    param_path, bin_path, json_path = planned_paths(prototxt, output)
    check_outputs([("the ncnn param file", param_path), ("the ncnn weights", bin_path),
                   ("the metadata file", json_path)], [("prototxt", prototxt), ("caffemodel", caffemodel)])
    for path in (param_path, bin_path, json_path):
        check_writable(path)
    net = Net.load(prototxt, caffemodel)
    folded, kept = [], []
    if fold_bn:
        result = fold_batchnorm(net)
        folded, kept = [f.layer for f in result.folded], [str(s) for s in result.skipped]
        notes = net.notes
        net = result.net()
        net.notes, net.source = notes, str(prototxt)
    shapes = _input_shapes(net, prototxt, input_size)
    model = to_ncnn(net, raw=raw, fp16=fp16, input_shapes=shapes)
    facts = export_facts(net, raw=raw and bool(model.raw_outputs), input_shapes=model.inputs,
                         preprocessing=net_metadata(prototxt) if metadata is None else metadata)
    facts["ncnn"] = {"param": param_path.name, "bin": bin_path.name, "inputs": list(model.inputs),
                     "outputs": model.outputs, "detections": model.detections, "raw_outputs": model.raw_outputs,
                     "weights": "float16" if fp16 else "float32", "layers": model.layer_count}
    atomic_write_many([(param_path, model.param), (bin_path, model.weights),
                               (json_path, sidecar_text(facts))])
    return NcnnExport(param_path, bin_path, json_path, model, folded, kept)


def _input_shapes(net: Net, prototxt, input_size):
    declared = dict(net.input_shapes())
    if not declared:
        raise CaffessdError(f"{prototxt}: the net declares no input")
    if input_size is None:
        return None
    name, shape = next(iter(declared.items()))
    if len(shape) != 4:
        raise CaffessdError(f"{prototxt}: --input-size needs a net with one 4-d image input")
    return {name: (1, shape[1], input_size[1], input_size[0])}
