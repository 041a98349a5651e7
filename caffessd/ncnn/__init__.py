"""Caffe -> ncnn export (NAME.param + NAME.bin), written straight from the
Caffe net as ncnn's caffe2ncnn does, without ncnn's tools.

    from caffessd.ncnn import convert, export_ncnn
    model = convert("deploy.prototxt", "w.caffemodel")     # NcnnModel: param text, weight bytes
    export_ncnn("deploy.prototxt", "w.caffemodel", "out/", name="ssd")

One writer per Caffe layer type lives in the family modules (conv, pooling,
activations, normalization, tensor_ops, ssd) and registers itself in
`registry.WRITERS`; importing this package loads them all.
"""
from caffessd.ncnn import activations, conv, normalization, pooling, ssd, tensor_ops  # noqa: F401  (register writers)
from caffessd.ncnn.converter import RAW_OUTPUTS, NcnnModel, convert, to_ncnn
from caffessd.ncnn.registry import WRITERS

SUPPORTED_LAYERS = sorted(WRITERS)

__all__ = ["NcnnModel", "RAW_OUTPUTS", "SUPPORTED_LAYERS", "WRITERS", "convert", "to_ncnn"]
