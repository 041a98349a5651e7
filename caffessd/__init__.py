"""caffessd: Caffe SSD detectors without building Caffe.

The public API is re-exported here lazily so that `import caffessd` stays
cheap (no onnx/onnxruntime import until a feature needs it).

May import: nothing at import time; each name resolves lazily to its module.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "CaffessdError": "caffessd.errors",
    "FormatError": "caffessd.errors",
    "read_prototxt": "caffessd.protoio",
    "write_prototxt": "caffessd.protoio",
    "read_caffemodel": "caffessd.protoio",
    "write_caffemodel": "caffessd.protoio",
    "read_net": "caffessd.protoio",
    "read_labelmap": "caffessd.protoio",
    "Net": "caffessd.net",
    "summarize": "caffessd.summary",
    "Detector": "caffessd.inference.detector",
    "Detection": "caffessd.inference.detector",
    "Preprocessing": "caffessd.image.preprocess",
    "to_onnx": "caffessd.onnxconv",
    "convert": "caffessd.onnxconv",
    "run_onnx": "caffessd.inference.session",
    "fold_batchnorm": "caffessd.merge_bn",
    "merge_bn": "caffessd.merge_bn",
    "evaluate": "caffessd.eval.runner",
    "detect_video": "caffessd.video.pipeline",
}


def __getattr__(name):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'caffessd' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
