"""Caffe -> ONNX conversion.

    model = convert("deploy.prototxt", "weights.caffemodel")      # onnx.ModelProto
    # run it with caffessd.inference.run_onnx(model, {"data": blob})

One emitter per Caffe layer type lives in the family modules (conv,
activations, normalization, pooling, tensor_ops, ssd) and registers itself in
`registry.EMITTERS`; importing this package loads them all.

May import: util, the core and image/ (preprocessing metadata); never onnxruntime
(running a model is caffessd.inference).
"""
from caffessd.onnxconv import activations, conv, normalization, pooling, ssd, tensor_ops  # noqa: F401  (register emitters)  # noqa: F401  (register emitters)
from caffessd.onnxconv.context import ConversionContext
from caffessd.onnxconv.converter import RAW_OUTPUTS, convert, to_onnx
from caffessd.onnxconv.metadata import read_metadata, read_preprocessing
from caffessd.onnxconv.registry import EMITTERS

SUPPORTED_LAYERS = sorted(EMITTERS)

__all__ = ["ConversionContext", "EMITTERS", "RAW_OUTPUTS", "SUPPORTED_LAYERS", "convert",
           "read_metadata", "read_preprocessing", "to_onnx"]
