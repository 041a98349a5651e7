"""Caffe SSD nets as OpenVINO IRs (`caffessd export-openvino`).

    from caffessd.export.openvino import export_openvino
    report = export_openvino("deploy.prototxt", "weights.caffemodel", "ssd.xml")
    report = export_openvino(..., "ssd-int8.xml", calibrate="photos/", images=100)   # NNCF int8

The IR takes a uint8 BGR picture (mean, scale, channel order and resize are
PrePostProcessor steps in the graph), ends in OpenVINO's own DetectionOutput
op (Caffe's semantics) and carries caffessd's metadata in its rt_info, so
`caffessd detect --artifact ssd.xml` and `caffessd eval ssd.xml` run it as
they run the ONNX export. Needs the `openvino` extra (and NNCF for --int8).

May import: util, the core, image/, onnxconv/ and inference/ (the OpenVINO
engine's rt_info conventions, calibration); openvino and nncf only inside
functions.
"""
from caffessd.export.openvino.export import ExportReport, export_openvino

__all__ = ["ExportReport", "export_openvino"]
