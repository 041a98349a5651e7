"""Activations and Softmax: the SSD fork's SoftmaxLayer::Reshape checks the axis;
the element-wise activations only have blob-count rules (tensor_ops.blob_counts)."""
from __future__ import annotations

from caffessd.validate.registry import blob_counts, canonical_axis, checker

blob_counts("ReLU", "ReLU6", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp", "Log",
            "Threshold", "PReLU")


@checker("Softmax")
def softmax(layer, inputs):
    canonical_axis(layer.softmax_param.axis, len(inputs[0]), "axis")
