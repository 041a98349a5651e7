"""Inference: running converted detectors.

Holds the Detector (detector), the cache of converted models (model_cache),
the one onnxruntime session factory (session), detection over many images
(batching) and int8 quantization with its calibration data (quantize,
calibration).

May import: util, the core, image/, datasets/ (calibration reads LMDBs) and
onnxconv/. Never eval/, merge_bn/, tfconvert/, train/ or commands/.

    from caffessd.inference import quantize_model, run_onnx
    report = quantize_model("face.onnx", "photos/", "face-int8.onnx", images=50)
"""
from caffessd.inference.quantize import QuantizeReport, quantize_model
from caffessd.inference.session import ModelLike, make_session, onnx_session, run_onnx

__all__ = ["ModelLike", "QuantizeReport", "make_session", "onnx_session", "quantize_model", "run_onnx"]
