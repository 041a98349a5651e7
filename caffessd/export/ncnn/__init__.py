"""Caffe -> ncnn export (NAME.param + NAME.bin), written straight from the
Caffe net as ncnn's caffe2ncnn does, without ncnn's tools.

    from caffessd.export.ncnn import convert, export_ncnn
    model = convert("deploy.prototxt", "w.caffemodel")     # NcnnModel: param text, weight bytes
    export_ncnn("deploy.prototxt", "w.caffemodel", "out/", name="ssd")

One writer per Caffe layer type lives in the family modules (conv, pooling,
activations, normalization, tensor_ops, ssd) and registers itself in
`registry.WRITERS`; importing this package loads them all.

May import: util, the core, onnxconv/ (DetectionOutput's settings, the
metadata every export carries), inference/ (the sidecar convention) and
merge_bn/ (--fold-bn). Nothing of ncnn itself: the files are written by hand.
"""
from caffessd.export.ncnn import activations, conv, normalization, pooling, ssd, tensor_ops  # noqa: F401  (register writers)
from caffessd.export.ncnn.converter import RAW_OUTPUTS, NcnnModel, convert, to_ncnn
from caffessd.export.ncnn.registry import WRITERS

SUPPORTED_LAYERS = sorted(WRITERS)

__all__ = ["NcnnModel", "RAW_OUTPUTS", "SUPPORTED_LAYERS", "WRITERS", "convert", "to_ncnn"]
