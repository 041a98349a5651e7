"""`export_openvino`: a Caffe SSD deploy net to an OpenVINO IR (.xml + .bin),
float32 or NNCF int8, written all-or-nothing."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from caffessd.errors import CaffessdError, FormatError
from caffessd.export.openvino.build import add_preprocessing, build_model, first_line, preprocessing_of
from caffessd.export.openvino.quantize import count_fake_quantize, nncf_module, quantize
from caffessd.inference.calibration import calibration_blobs
from caffessd.inference.engines.openvino_engine import openvino, set_rt_metadata
from caffessd.net import Net
from caffessd.util.files import atomic_write_many, check_writable


@dataclass
class ExportReport:
    xml: Path
    weights: Path
    metadata: Dict[str, Any]
    int8_ops: int = 0            # FakeQuantize ops (0: float IR)
    calibration_images: int = 0

    def lines(self) -> List[str]:
        how = self.metadata.get("openvino", {}).get("detection_output")
        tail = {"native": ", DetectionOutput as OpenVINO's own op", "onnx": ", DetectionOutput as the ONNX "
                "subgraph (TF post-processing)"}.get(how, " (raw outputs)")
        precision = (f"int8 ({self.int8_ops} FakeQuantize ops, NNCF on {self.calibration_images} image(s))"
                     if self.int8_ops else "float32")
        return [f"wrote {self.xml} and {self.weights.name}: {precision}{tail}; input '{_input(self.metadata)}'"]


def _input(metadata) -> str:
    width, height = metadata["input_size"]
    return f"image, uint8 1x{height}x{width}x3 BGR (any size; resized in the graph)"


def export_openvino(prototxt, caffemodel, output, *, metadata: Optional[dict] = None, input_shapes=None,
                    raw: bool = False, calibrate=None, images: int = 100) -> ExportReport:
    """Convert the net to OUTPUT (.xml; the weights go to the .bin beside it).
    `metadata`: preprocessing and labels as export-onnx takes them; with
    `calibrate` (a folder of images or an LMDB), int8 by NNCF on `images` of them."""
    output = Path(output)
    if output.suffix.lower() != ".xml":
        raise CaffessdError(f"{output}: an OpenVINO IR is written as NAME.xml (+ NAME.bin); give -o NAME.xml")
    ov = openvino()
    if calibrate is not None:
        nncf_module()  # before the net is converted and the pictures read
    net = Net.load(prototxt, caffemodel)
    model, facts = build_model(net, metadata or {}, input_shapes, raw)
    prep = preprocessing_of(facts)
    report = ExportReport(output, output.with_suffix(".bin"), facts)
    if calibrate is not None:
        blobs = calibration_blobs(calibrate, images, prep)
        model = quantize(model, blobs, calibrate)
        report.int8_ops, report.calibration_images = count_fake_quantize(model), len(blobs)
        facts["quantization"] = {"tool": "nncf", "images": len(blobs), "float_ops": ["DetectionOutput"]}
    model = add_preprocessing(model, prep)
    set_rt_metadata(model, facts)
    _save(ov, model, output)
    return report


def _save(ov, model, output: Path) -> None:
    """ov.save_model into a scratch folder, then both files written beside
    each other under temporary names and renamed into place together (caffessd.util.files.atomic_write_many): an
    interrupted export leaves no .xml without its .bin."""
    check_writable(output)
    with tempfile.TemporaryDirectory(prefix="caffessd-ir-") as scratch:
        xml = Path(scratch) / "model.xml"
        try:
            # compress_to_fp16=False: OpenVINO halves float weights by default.
            ov.save_model(model, os.fspath(xml), compress_to_fp16=False)
        except Exception as exc:
            raise FormatError(output, f"OpenVINO could not write the IR: {first_line(exc)}") from None
        atomic_write_many([(output, xml.read_bytes()), (output.with_suffix(".bin"), xml.with_suffix(".bin").read_bytes())])
