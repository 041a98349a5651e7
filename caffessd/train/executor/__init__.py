"""A Caffe train/test net's forward pass in TensorFlow.

One builder per Caffe layer type lives in the family modules (conv,
activations, normalization, pooling, tensor_ops, ssd: the family map every
layer registry shares) and registers itself in `registry.BUILDERS`;
importing this package loads them all.

May import: the core and the rest of train/ below it (multibox, loss).
"""
from caffessd.train.executor import activations, conv, normalization, pooling, ssd, tensor_ops  # noqa: F401
from caffessd.train.executor.net import ParamStore, TFNet, data_input_shapes, initial_weights
from caffessd.train.executor.registry import BUILDERS

__all__ = ["BUILDERS", "ParamStore", "TFNet", "data_input_shapes", "initial_weights"]
