"""Building the ov.Model of a Caffe SSD net: OpenVINO's ONNX frontend reads
caffessd's ONNX conversion, DetectionOutput becomes OpenVINO's own op, and
PrePostProcessor steps put the preprocessing into the graph.

Why OpenVINO's DetectionOutput: it is the op OpenVINO made for Caffe's SSD
(same decode, per-class top_k, greedy NMS, keep_top_k over classes), one
fused kernel instead of the TopK/NonMaxSuppression/Gather chain of the ONNX
form. Nets whose caffessd notes ask for the TF Object Detection API's
post-processing (max_per_class, zero-area boxes dropped when clipping) keep
the ONNX chain, which OpenVINO runs as it is: its own op has no such modes.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from caffessd.errors import CaffessdError
from caffessd.image.preprocess import Preprocessing
from caffessd.inference.engines.openvino_engine import INPUT_NAME, OUTPUT_NAME, openvino, read_onnx_bytes
from caffessd.inference.engines.openvino_passes import speed_passes
from caffessd.onnxconv import read_metadata, to_onnx


def native_detection_output(settings: Dict[str, Any]) -> bool:
    """Whether OpenVINO's DetectionOutput op has the semantics these
    settings (caffessd's ONNX metadata "detection_output") ask for."""
    return (settings.get("max_per_class", -1) < 0 and not settings.get("clip_before_nms")
            and not settings.get("clip_after_nms"))


def detection_output_attributes(settings: Dict[str, Any]) -> Dict[str, Any]:
    """opset8 DetectionOutput attributes from Caffe's DetectionOutput settings.
    Caffe's defaults: no confidence threshold means every score counts
    (-FLT_MAX), top_k/keep_top_k -1 mean all; boxes are normalised and
    never clipped."""
    threshold = settings.get("confidence_threshold")
    return {
        "background_label_id": int(settings["background_label_id"]),
        "top_k": int(settings["top_k"]),
        "keep_top_k": [int(settings["keep_top_k"])],
        "code_type": "caffe.PriorBoxParameter." + settings["code_type"],
        "share_location": bool(settings["share_location"]),
        "variance_encoded_in_target": bool(settings["variance_encoded_in_target"]),
        "nms_threshold": float(settings["nms_threshold"]),
        "confidence_threshold": float(np.finfo(np.float32).min if threshold is None else threshold),
        "clip_after_nms": False,
        "clip_before_nms": False,
        "decrease_label_id": False,
        "normalized": True,
        "input_height": 1,
        "input_width": 1,
        "objectness_score": 0.0,
    }


def read_onnx(model) -> Any:
    """An onnx.ModelProto through OpenVINO's ONNX frontend (in memory), as
    ov.convert_model reads it but without its telemetry (read_onnx_bytes)."""
    return read_onnx_bytes(model.SerializeToString())


def with_detection_output(raw_model, settings: Dict[str, Any]):
    """The raw conversion (outputs loc, conf, priors) ending in OpenVINO's
    DetectionOutput instead, its rows named `detection_out`."""
    ov = openvino()
    from openvino import opset8

    sources = {result.get_friendly_name().split("/")[0]: result.input_value(0) for result in raw_model.get_results()}
    missing = [name for name in ("loc", "conf", "priors") if name not in sources]
    if missing:
        raise CaffessdError(f"the raw conversion lacks the output(s) {', '.join(missing)}")
    for value in sources.values():
        # The frontend's output names would still point at the old results.
        value.get_tensor().set_names(set())
    detection = opset8.detection_output(sources["loc"], sources["conf"], sources["priors"],
                                        detection_output_attributes(settings))
    detection.output(0).get_tensor().set_names({OUTPUT_NAME})
    detection.set_friendly_name(OUTPUT_NAME)
    return ov.Model([opset8.result(detection.output(0))], raw_model.get_parameters(), raw_model.get_friendly_name())


def add_preprocessing(model, prep: Preprocessing):
    """PrePostProcessor steps: the input becomes a uint8 [N, H, W, 3] BGR
    picture of any size, converted to float, channel-swapped when the net
    takes RGB, resized (bilinear) to the net's size, mean-subtracted and
    multiplied by the scale: (pixel - mean) * scale, as caffessd's make_blob
    computes it (a Multiply, not PrePostProcessor's divide-by-scale, so the
    same float operations)."""
    ov = openvino()
    from openvino import opset8
    from openvino.preprocess import ColorFormat, PrePostProcessor, ResizeAlgorithm

    ppp = PrePostProcessor(model)
    image = ppp.input()
    image.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
        .set_color_format(ColorFormat.BGR).set_spatial_dynamic_shape()
    image.model().set_layout(ov.Layout("NCHW"))
    steps = image.preprocess().convert_element_type(ov.Type.f32)
    if prep.rgb:
        steps.convert_color(ColorFormat.RGB)
    steps.resize(ResizeAlgorithm.RESIZE_LINEAR)
    if any(prep.mean):
        steps.mean([float(v) for v in prep.mean])
    if prep.scale != 1.0:
        factor = np.float32(prep.scale)
        steps.custom(lambda node: opset8.multiply(node, opset8.constant(factor)).output(0))
    built = ppp.build()
    built.inputs[0].get_tensor().set_names({INPUT_NAME})
    built.get_parameters()[0].set_friendly_name(INPUT_NAME)
    return built


def build_model(net, metadata: Dict[str, Any], input_shapes=None, raw: bool = False) -> Tuple[Any, Dict[str, Any]]:
    """(ov.Model without preprocessing, its caffessd metadata) for a loaded
    Caffe net. The metadata is the ONNX export's (onnxconv.read_metadata),
    plus "openvino": how DetectionOutput was built."""
    detection = next((layer for layer in net.layers if layer.type == "DetectionOutput"), None)
    if detection is None and not raw:
        raise CaffessdError("the net has no DetectionOutput layer; detection needs an SSD deploy net "
                            "(--raw exports the outputs of any net)")
    # Constant priors (not raw): OpenVINO folds them into DetectionOutput's
    # input once, where the OpenCV-friendly computed form costs an Add and a
    # Reorder at every run.
    probe = to_onnx(net, raw=True, input_shapes=input_shapes, metadata=metadata, constant_priors=not raw)
    facts = read_metadata(probe)
    settings = facts.get("detection_output")
    if raw:
        model = read_onnx(probe)
        speed_passes(model)
        return model, facts
    if native_detection_output(settings):
        model = with_detection_output(read_onnx(probe), settings)
        how = "native"
    else:
        model = read_onnx(to_onnx(net, input_shapes=input_shapes, metadata=metadata))
        model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
        how = "onnx"
    speed_passes(model)
    facts["kind"] = "full"
    facts["openvino"] = {"detection_output": how, "input": "uint8 NHWC BGR picture, preprocessing in the graph"}
    return model, facts


def preprocessing_of(facts: Dict[str, Any]) -> Preprocessing:
    """The Preprocessing the metadata describes."""
    return Preprocessing.from_metadata(facts)


def first_line(exc: Exception, limit: Optional[int] = 300) -> str:
    """OpenVINO/NNCF messages span lines; the last non-location one tells."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return ((telling or lines or [exc.__class__.__name__])[-1])[:limit]
