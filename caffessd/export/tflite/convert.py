"""Caffe Net -> TFLite flatbuffer, through TensorFlow.

The net is built by caffessd's TensorFlow executor (caffessd.train.executor,
Caffe's semantics layer by layer, checked against the ONNX path in the
trainer's tests) in TEST phase, fed an NHWC image as TFLite models take it,
and traced into a tf.function that the TFLite converter turns into a
flatbuffer: float32, float16 weights, or full int8 (every operator int8,
calibrated on representative images; float input and outputs around it).

The full model ends in TFLite_Detection_PostProcess (caffessd.export.tflite.
postprocess) with outputs in the order TF's detection models have them:
detection_boxes, detection_classes, detection_scores, num_detections.
`raw` ends at DetectionOutput's inputs instead: loc, conf (after the net's
softmax/sigmoid) and priors in Caffe's layouts, as the ONNX --raw export.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from caffessd.errors import CaffessdError, UnsupportedLayerError
from caffessd.export.tflite.pooling import pooling
from caffessd.export.tflite.postprocess import CANDIDATES, NMS_MODES, post_process
from caffessd.net import Net
from caffessd.onnxconv.ssd import detection_settings
from caffessd.priorbox import prior_boxes
from caffessd.train.executor import BUILDERS, ParamStore, TFNet
from caffessd.train.executor.context import NHWC, ForwardContext
from caffessd.train.executor.net import EVALUATION_TYPES, INPUT_TYPES
from caffessd.train.tfimport import tensorflow
from caffessd.util.quiet import quiet_stderr

PRECISIONS = ("float32", "float16", "int8")
FULL_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
RAW_OUTPUTS = ("loc", "conf", "priors")


@dataclass
class TfliteModel:
    """A converted model and its interface."""

    content: bytes
    input_name: str
    input_shape: List[int]                   # NHWC
    outputs: List[str]                       # in the model's output order
    postprocess: Dict[str, object] = field(default_factory=dict)   # the custom op's attributes (full model)
    precision: str = "float32"


def _executor(net: Net, shapes: Dict[str, tuple]):
    """The TEST-phase TensorFlow executor of `net`, refusing types it has no builder for."""

    for layer in net.param.layer:
        if layer.type not in BUILDERS and layer.type not in INPUT_TYPES | EVALUATION_TYPES:
            raise UnsupportedLayerError(layer.name, layer.type, "expressible in TFLite by caffessd's exporter")
    tfnet = TFNet(net.param, "TEST", ParamStore(), initial=net.weights, source=net.source, input_shapes=shapes)
    # The weights go into the graph as constants: nothing for the converter to freeze.
    tf = tensorflow()
    tfnet.constants = {name: [tf.constant(v.numpy()) for v in variables]
                       for name, variables in tfnet.store.variables.items()}
    return tfnet


def _forward(tfnet, input_blob: str, image):
    """Run the executor's layers on an NHWC `image`; returns the ForwardContext.
    MAX pooling is built quantization-friendly (caffessd.export.tflite.pooling)."""

    ctx = ForwardContext(tfnet.constants, training=False, update_stats=False, layouts=tfnet.store.layouts)
    ctx.feed(input_blob, image, NHWC)
    for info in tfnet.infos:
        if info.type in INPUT_TYPES or info.type in EVALUATION_TYPES:
            continue
        if info.type == "Pooling":
            pooling(ctx, info, BUILDERS["Pooling"])
        else:
            BUILDERS[info.type](ctx, info)
    return ctx


def to_tflite(net: Net, *, raw: bool = False, precision: str = "float32", nms: str = "regular",
              candidates: str = "caffe",
              representative: Optional[Callable[[], Iterable[np.ndarray]]] = None,
              input_shapes: Optional[Dict[str, tuple]] = None, extra_outputs: Sequence[str] = ()) -> TfliteModel:
    """Convert `net` (with weights). `representative`: for int8, a callable
    yielding NCHW float32 input blobs (1, 3, H, W) for calibration.
    `extra_outputs`: blob names also exposed as outputs (the parity tests
    read loc/conf from the same model whose detections they check)."""
    if precision not in PRECISIONS:
        raise CaffessdError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    if nms not in NMS_MODES:
        raise CaffessdError(f"NMS must be one of {', '.join(NMS_MODES)}, not '{nms}'")
    if candidates not in CANDIDATES:
        raise CaffessdError(f"candidates must be one of {', '.join(CANDIDATES)}, not '{candidates}'")
    if precision == "int8" and representative is None:
        raise CaffessdError("int8 needs representative images to calibrate with")
    with quiet_stderr():   # TensorFlow's device probing and the converter's progress, written by C++
        return _to_tflite(net, raw, precision, nms, candidates, representative, input_shapes, extra_outputs)


def _to_tflite(net, raw, precision, nms, candidates, representative, input_shapes, extra_outputs) -> TfliteModel:
    tf = tensorflow()
    shapes = _one_image(net, input_shapes)
    input_blob, shape = next(iter(shapes.items()))
    tfnet = _executor(net, shapes)
    detections = [layer for layer in net.param.layer if layer.type == "DetectionOutput"]
    if len(detections) > 1:
        raise CaffessdError(f"{net.source or 'the net'}: {len(detections)} DetectionOutput layers "
                            f"({', '.join(d.name for d in detections)}); a TFLite detector has one")
    detection = detections[0] if detections else None
    if detection is None and not extra_outputs:
        raise CaffessdError(f"{net.source or 'the net'}: no DetectionOutput layer; the TFLite export needs an SSD "
                            "deploy net")
    nhwc = [1, int(shape[2]), int(shape[3]), int(shape[1])]
    post = None
    if detection is not None and not raw:
        priors = _constant_blob(tfnet, detection.bottom[2])
        if priors is None:     # not the usual PriorBox -> Concat chain: run the net once
            priors = _forward(tfnet, input_blob, tf.zeros(nhwc)).get(detection.bottom[2]).numpy()
        settings = detection_settings(detection, dict(getattr(net, "notes", None) or {}))
        post = post_process(detection, settings, priors, nms, candidates)
    names = list(RAW_OUTPUTS if post is None else FULL_OUTPUTS)[: 0 if detection is None else None]
    names += [n for n in extra_outputs]
    function = _graph_function(tf, tfnet, input_blob, nhwc, detection, post, extra_outputs)
    content = _convert(tf, tfnet, function, precision, representative, custom_ops=post is not None)
    content = _name_outputs(content, names)
    facts = dict(post.attributes, candidates_per_class=post.candidates_per_class) if post else {}
    return TfliteModel(content, input_blob, nhwc, names, facts, precision)


def _constant_blob(tfnet, blob: str) -> Optional[np.ndarray]:
    """The value of a blob computed from PriorBox layers only (through Concat,
    Flatten, Reshape, Split), in numpy; None for anything else."""
    writers = {}
    for info in tfnet.infos:
        for top in info.layer.top:
            writers[top] = info

    def value(name):
        info = writers.get(name)
        if info is None:
            return None
        if info.type == "PriorBox":
            feature, image = info.input_shapes[0], info.input_shapes[1]
            return prior_boxes(info.layer.prior_box_param, feature[2:4], image[2:4])
        inputs = [value(b) for b in info.layer.bottom]
        if any(v is None for v in inputs):
            return None
        if info.type == "Concat":
            param = info.layer.concat_param
            axis = param.axis if param.HasField("axis") or not param.HasField("concat_dim") else param.concat_dim
            return np.concatenate(inputs, axis=axis)
        if info.type in ("Flatten", "Reshape"):
            return inputs[0].reshape(info.output_shapes[0])
        if info.type == "Split":
            return inputs[0]
        return None
    return value(blob)


def _one_image(net: Net, input_shapes) -> Dict[str, tuple]:
    declared = dict(net.input_shapes())
    if len(declared) != 1:
        raise CaffessdError(f"{net.source or 'the net'}: the TFLite export takes a net with one image input, "
                            f"this one has {len(declared)}")
    shapes = {name: (1, *shape[1:]) for name, shape in declared.items()}
    shapes.update({k: tuple(v) for k, v in (input_shapes or {}).items()})
    shape = next(iter(shapes.values()))
    if len(shape) != 4 or shape[1] != 3:
        raise CaffessdError(f"{net.source or 'the net'}: input shape {list(shape)} is not N,3,H,W")
    return shapes


def _graph_function(tf, tfnet, input_blob, nhwc, detection, post, extra_outputs):
    """The traced function: image -> the model's outputs (a tuple, in order)."""
    if post is not None:
        implemented = tf.function(experimental_implements=post.implements_signature())(_placeholder_postprocess)
        anchors = tf.constant(post.anchors)
        scale = None if post.encoding_scale is None else tf.constant(post.encoding_scale[None])

    @tf.function(input_signature=[tf.TensorSpec(nhwc, tf.float32, name=input_blob)])
    def model(image):
        ctx = _forward(tfnet, input_blob, image)
        outputs = []
        if detection is not None:
            loc, conf, priors = (ctx.get(b) for b in detection.bottom[:3])
            if post is None:
                outputs += [loc, conf, priors]
            else:
                count = post.anchors.shape[0]
                boxes = tf.gather(tf.reshape(loc, [1, count, 4]), [1, 0, 3, 2], axis=2)   # x,y,w,h -> y,x,h,w
                if scale is not None:
                    boxes = boxes * scale
                scores = tf.reshape(conf, [1, count, -1])
                if post.candidates_per_class:
                    scores = _top_k_per_class(tf, scores, post.candidates_per_class)
                outputs += list(implemented(boxes, scores, anchors))
        outputs += [ctx.get(name) for name in extra_outputs]
        return tuple(outputs)
    return model.get_concrete_function()


def _top_k_per_class(tf, scores, k: int):
    """Caffe's pre-NMS cap: each class's scores below its k-th best become 0
    (below any confidence threshold), so NMS sees Caffe's candidates."""
    kth = tf.math.top_k(tf.transpose(scores, [0, 2, 1]), k=k).values[:, :, k - 1]      # [1, C]
    return tf.where(scores >= kth[:, None, :], scores, tf.zeros_like(scores))


def _placeholder_postprocess(box_encodings, class_predictions, anchors):
    """Stands for TFLite_Detection_PostProcess while tracing: the converter
    replaces this function (by its experimental_implements text) with the op."""
    import tensorflow as tf

    zero = tf.constant(0.0, tf.float32)
    return zero, zero, zero, zero


def _convert(tf, tfnet, function, precision, representative, custom_ops: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], tf.Module())
    converter.allow_custom_ops = custom_ops
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([np.ascontiguousarray(b.transpose(0, 2, 3, 1), np.float32)]
                                                    for b in representative())
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises several of its own types
        text = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise CaffessdError(f"the TFLite converter refused the net: {text[:300]}") from None


def _name_outputs(content: bytes, names: Sequence[str]) -> bytes:
    """Put the outputs in the traced order under their names. The converter
    lists a signature's outputs as output_0, output_1, ... but orders the
    subgraph's outputs its own way, and apps read detection outputs by index."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    subgraph = model.subgraphs[0]
    signature = model.signatureDefs[0]
    by_key = {_text(entry.name): entry for entry in signature.outputs}
    ordered = [by_key[f"output_{i}"] for i in range(len(names))]
    subgraph.outputs = np.array([entry.tensorIndex for entry in ordered], dtype=np.int32)
    for entry, name in zip(ordered, names):
        entry.name = name.encode()
        subgraph.tensors[entry.tensorIndex].name = name.encode()
    signature.outputs = ordered
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
