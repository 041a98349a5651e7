"""export_tflite: a Caffe deploy net to NAME.tflite and the NAME.caffessd.json
sidecar (preprocessing, labels, DetectionOutput settings, the op's
attributes and the tensor interface), written together or not at all."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from caffessd.errors import CaffessdError
from caffessd.export.tflite.convert import TfliteModel, to_tflite
from caffessd.image.preprocess import Preprocessing
from caffessd.inference.calibration import calibration_blobs
from caffessd.inference.engines.sidecar import sidecar_path, sidecar_text
from caffessd.net import Net
from caffessd.onnxconv.facts import export_facts, net_metadata
from caffessd.train.tfimport import tensorflow
from caffessd.util.files import atomic_write_many, check_writable
from caffessd.util.lmdb_check import looks_like_lmdb
from caffessd.util.outputs import Input, check_outputs

SUFFIX = ".tflite"
CALIBRATION_IMAGES = 100


@dataclass
class TfliteExport:
    path: Path
    sidecar_path: Path
    model: TfliteModel
    calibration_images: int = 0


def output_paths(output) -> Tuple[Path, Path]:
    output = Path(output)
    if output.suffix.lower() != SUFFIX:
        raise CaffessdError(f"{output}: the TFLite model's file name must end in {SUFFIX}")
    return output, sidecar_path(output)


def require_tensorflow() -> None:
    """One line naming the extra when TensorFlow (the converter) is missing
    (imported quietly, as the trainer imports it)."""
    try:
        found = tensorflow()
    except CaffessdError:
        found = None
    if found is None:
        raise CaffessdError("export-tflite converts with TensorFlow, which is not installed: "
                            "pip install 'caffessd[tf]'")


def export_tflite(prototxt, caffemodel, output, *, raw: bool = False, precision: str = "float32",
                  nms: str = "regular", candidates: str = "caffe", calibrate=None, calibration_images: int = CALIBRATION_IMAGES,
                  metadata: Optional[dict] = None, input_size: Optional[Tuple[int, int]] = None,
                  threads: int = 2, extra_outputs: Sequence[str] = ()) -> TfliteExport:
    """Convert and write. `metadata`: preprocessing and labels to record
    (caffessd.commands.export_options.export_metadata; None: the net's own); int8 calibrates
    on up to `calibration_images` images of `calibrate` (a folder or an LMDB),
    prepared with that preprocessing. `extra_outputs`: Caffe blobs also
    exposed as outputs after the model's own (for checking a model against
    another runtime blob by blob)."""
    path, json_path = output_paths(output)
    check_outputs([("the TFLite model", path), ("the metadata file", json_path)],
                  [Input("prototxt", prototxt), Input("caffemodel", caffemodel),
                   Input("--calibrate", calibrate, sealed=bool(calibrate) and looks_like_lmdb(calibrate))])
    for target in (path, json_path):
        check_writable(target)
    if precision == "int8" and calibrate is None:
        raise CaffessdError("--int8 needs --calibrate DIR_OR_LMDB: images to choose the int8 ranges from")
    if calibrate is not None and precision != "int8":
        raise CaffessdError("--calibrate is only used with --int8")
    require_tensorflow()
    net = Net.load(prototxt, caffemodel)
    shapes = _input_shapes(net, prototxt, input_size)
    facts = export_facts(net, raw=raw, input_shapes=shapes or {k: (1, *v[1:]) for k, v in net.input_shapes().items()},
                         preprocessing=net_metadata(prototxt) if metadata is None else metadata)
    blobs = _calibration(calibrate, calibration_images, facts, threads) if precision == "int8" else None
    model = to_tflite(net, raw=raw, precision=precision, nms=nms, candidates=candidates, input_shapes=shapes,
                      representative=(lambda: iter(blobs)) if blobs else None, extra_outputs=extra_outputs)
    facts["tflite"] = {"input": model.input_name, "input_layout": "NHWC", "input_shape": model.input_shape,
                       "outputs": model.outputs, "precision": precision, "nms": nms if not raw else None, "candidates": candidates if not raw else None,
                       "postprocess": model.postprocess, "calibration_images": len(blobs or [])}
    atomic_write_many([(path, model.content), (json_path, sidecar_text(facts))])
    return TfliteExport(path, json_path, model, len(blobs or []))


def _input_shapes(net: Net, prototxt, input_size):
    if input_size is None:
        return None
    declared = dict(net.input_shapes())
    name, shape = next(iter(declared.items()), (None, ()))
    if len(shape) != 4:
        raise CaffessdError(f"{prototxt}: --input-size needs a net with one 4-d image input")
    return {name: (1, shape[1], input_size[1], input_size[0])}


def _calibration(source, count: int, facts: dict, threads: int):
    return calibration_blobs(source, count, Preprocessing.from_metadata(facts), workers=threads)
