"""Caffe -> TFLite export: float32, float16 or full int8, ending in TFLite's
standard TFLite_Detection_PostProcess op (or at the raw loc/conf/priors).

    from caffessd.export.tflite import to_tflite, export_tflite
    model = to_tflite(Net.load("deploy.prototxt", "w.caffemodel"))   # TfliteModel: bytes and outputs
    export_tflite("deploy.prototxt", "w.caffemodel", "ssd.tflite", precision="int8", calibrate="images/")

Needs TensorFlow (caffessd[tf]) to convert; the result runs on ai-edge-litert
(caffessd[tflite]) or any TFLite runtime.

May import: everything the exporters may (util, the core, image/, onnxconv/,
inference/) and train/ (the TensorFlow executor builds the net), which puts
this package in the train layer; TensorFlow only inside functions.
"""
from caffessd.export.tflite.convert import FULL_OUTPUTS, PRECISIONS, RAW_OUTPUTS, TfliteModel, to_tflite
from caffessd.export.tflite.export import export_tflite
from caffessd.export.tflite.postprocess import CANDIDATES, NMS_MODES

__all__ = ["CANDIDATES", "FULL_OUTPUTS", "NMS_MODES", "PRECISIONS", "RAW_OUTPUTS", "TfliteModel", "export_tflite", "to_tflite"]
