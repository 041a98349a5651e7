"""Caffe -> ONNX conversion.

    model = convert("deploy.prototxt", "weights.caffemodel")      # onnx.ModelProto
    outputs = run_onnx(model, {"data": blob})                      # {"detection_out": (1,1,N,7)}

One emitter per Caffe layer type lives in the family modules (conv,
activations, normalization, pooling, tensor_ops, ssd) and registers itself in
`registry.EMITTERS`; importing this package loads them all.
"""
from caffessd.onnxconv import activations, conv, normalization, pooling, ssd, tensor_ops  # noqa: F401  (register emitters)
from caffessd.onnxconv.context import ConversionContext
from caffessd.onnxconv.converter import RAW_OUTPUTS, convert, to_onnx
from caffessd.onnxconv.metadata import read_metadata, read_preprocessing
from caffessd.onnxconv.registry import EMITTERS
from caffessd.onnxconv.runtime import onnx_session, run_onnx

SUPPORTED_LAYERS = sorted(EMITTERS)

__all__ = ["ConversionContext", "EMITTERS", "RAW_OUTPUTS", "SUPPORTED_LAYERS", "convert", "onnx_session",
           "read_metadata", "read_preprocessing", "run_onnx", "to_onnx"]
