"""Caffe's own set-up checks, run on every layer before its shapes are used.

The SSD fork of Caffe refuses a net in LayerSetUp/Reshape (CHECK and
LOG(FATAL)) when a parameter or an input shape breaks a layer's rules: a
repeated Permute axis, `group` not dividing the channels, PriorBox with three
variances, DetectionOutput whose loc/conf/prior counts disagree, a layer with
too few tops... Without these checks such nets crash later, deep inside the
ONNX converter or onnxruntime, or give silently wrong shapes.

`check_layer(layer, input_shapes)` raises `LayerRuleError(field, rule)`;
`caffessd.net.Net.walk` calls it for every layer, so inspect, export-onnx,
detect and merge-bn all refuse such nets with one line naming the layer, the
field and the rule. `caffessd.validate.memory` bounds what a net may allocate.

One checker per layer type, grouped by the family map every layer registry
shares (conv, pooling, activations, normalization, tensor_ops, ssd),
registered in registry.py as caffessd.onnxconv does for emitters.

May import: util and the core's layer arithmetic (caffessd.layers).
"""
from caffessd.validate.registry import CHECKERS, LayerRuleError, check_layer, check_outputs
from caffessd.validate import activations, conv, normalization, pooling, ssd, tensor_ops  # noqa: F401  (register)

__all__ = ["CHECKERS", "LayerRuleError", "check_layer", "check_outputs"]
