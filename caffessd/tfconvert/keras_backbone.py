"""An ImageNet tf.keras.applications MobileNet / MobileNetV2 as the backbone of a gen-model net.

For starting SSD training from an ImageNet classifier: gen-model builds the
detection net (exact mode: ReLU6, TF SAME padding, BatchNorm eps 0.001), the
Keras model's convolutions and BatchNorms fill its backbone, and the extra
layers and heads keep gen-model's filler initialisation.

Keras layer names (keras/applications/mobilenet_v2.py, mobilenet.py):
  v2: Conv1 + bn_Conv1; expanded_conv_{depthwise,project}(+_BN);
      block_N_{expand,depthwise,project}(+_BN); Conv_1 + Conv_1_bn
  v1: conv1 + conv1_bn; conv_dw_N + conv_dw_N_bn; conv_pw_N + conv_pw_N_bn
Channels: Keras rounds like TF-slim with min_depth 8 (its unrounded
expansions equal the rounded ones, block depths being multiples of 8), and
MobileNetV2's Conv_1 stays 1280 below width 1 (gen-model's `finegrain`).
Keras pads stride-2 MobileNetV2 convs like TF SAME, so v2 feature maps match
at any input size; Keras MobileNet (v1) always pads bottom/right, which is TF
SAME only where the map size is even (224, 320, 512, ... inputs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

from caffessd import protoio
from caffessd.errors import CaffessdError, FormatError
from caffessd.netprep import TF_MEAN, TF_SCALE, with_preprocessing
from caffessd.util.files import atomic_write_many
from caffessd.generators import SSDConfig, build_net, init_weights

from .checkpoint import import_tensorflow
from .mapping import depthwise_to_grouped, hwio_to_oihw
from .zoo import BN_EPSILON


@dataclass
class KerasResult:
    backbone: str
    width: float
    layers: int
    prototxt: Path
    caffemodel: Path


def keras_layer_map(backbone: str) -> List[Tuple[str, str, str, bool]]:
    """(Keras conv layer, Keras BatchNorm layer, Caffe layer, depthwise) in net order."""
    if backbone == "mnv2":
        rows = [("Conv1", "bn_Conv1", "Conv", False),
                ("expanded_conv_depthwise", "expanded_conv_depthwise_BN", "conv/depthwise", True),
                ("expanded_conv_project", "expanded_conv_project_BN", "conv/project", False)]
        for i in range(1, 17):
            for part, dw in (("expand", False), ("depthwise", True), ("project", False)):
                rows.append((f"block_{i}_{part}", f"block_{i}_{part}_BN", f"conv_{i}/{part}", dw))
        rows.append(("Conv_1", "Conv_1_bn", "Conv_1", False))
        return rows
    rows = [("conv1", "conv1_bn", "conv0", False)]
    for i in range(1, 14):
        rows.append((f"conv_dw_{i}", f"conv_dw_{i}_bn", f"conv{i}/dw", True))
        rows.append((f"conv_pw_{i}", f"conv_pw_{i}_bn", f"conv{i}", False))
    return rows


def load_keras(path):
    import_tensorflow()
    import keras  # noqa: WPS433 - lazy, comes with TensorFlow

    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "no such file")
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises many types for foreign files
        raise FormatError(path, f"cannot load as a Keras model: {str(exc).splitlines()[0]}") from None


def _backbone_of(model) -> str:
    names = {layer.name for layer in model.layers}
    if "Conv1" in names and "block_1_expand" in names:
        return "mnv2"
    if "conv1" in names and "conv_dw_1" in names:
        return "mnv1"
    raise CaffessdError(f"'{model.name}' is not a tf.keras.applications MobileNet or MobileNetV2")


def _width(model, backbone: str) -> float:
    # The last block's depth is the least rounded one (320 or 1024 times alpha, to
    # within 8 channels), so it gives alpha back exactly for the Keras widths.
    layer, base = ("block_16_project", 320) if backbone == "mnv2" else ("conv_pw_13", 1024)
    last = model.get_layer(layer).get_weights()[0].shape[-1]
    return round(last / base, 4)


def _fill(layers: dict, caffe: str, kernel: np.ndarray, bn: List[np.ndarray], depthwise: bool) -> None:
    layer = layers.get(caffe)
    if layer is None:
        raise CaffessdError(f"the generated net has no layer '{caffe}'")
    weights = depthwise_to_grouped(kernel) if depthwise else hwio_to_oihw(kernel)
    expected = tuple(protoio.blob_shape(layer.blobs[0])) if layer.blobs else None
    if expected is not None and expected != weights.shape:
        raise CaffessdError(f"Keras weights for '{caffe}' have shape {list(weights.shape)}, the "
                            f"net's layer {list(expected)} (width multiplier rounding differs)")
    gamma, beta, mean, var = (np.asarray(a, np.float32) for a in bn)
    del layer.blobs[:]
    bn_layer, scale = layers.get(caffe + "/bn"), layers.get(caffe + "/scale")
    if bn_layer is None:  # merged form: fold into the conv
        factor = gamma / np.sqrt(var.astype(np.float64) + BN_EPSILON)
        layer.blobs.append(protoio.array_to_blob((weights * factor.reshape(-1, 1, 1, 1)).astype(np.float32)))
        layer.blobs.append(protoio.array_to_blob((beta - mean * factor).astype(np.float32)))
        return
    layer.blobs.append(protoio.array_to_blob(weights.astype(np.float32)))
    del bn_layer.blobs[:]
    for value in (mean, var, np.ones(1, np.float32)):
        bn_layer.blobs.append(protoio.array_to_blob(value))
    bn_layer.batch_norm_param.eps = BN_EPSILON
    del scale.blobs[:]
    scale.blobs.append(protoio.array_to_blob(gamma))
    scale.blobs.append(protoio.array_to_blob(beta))


def convert_keras(path, out_dir, height: int = 300, width: int = 300, head: str = "ssdlite",
                  num_classes: int = 21, merge_bn: bool = False, bgr: bool = True) -> KerasResult:
    model = load_keras(path)
    backbone = _backbone_of(model)
    multiplier = _width(model, backbone)
    # Keras rounds channels like TF-slim with min_depth 8 and keeps MobileNetV2's
    # Conv_1 at 1280 channels below width 1 (finegrain).
    config = SSDConfig(backbone=backbone, head=head, width=multiplier, min_depth=8,
                       finegrain=backbone == "mnv2", input_width=width,
                       input_height=height, num_classes=num_classes, relu6=True, tf_pad=True,
                       bn="none" if merge_bn else "all", bn_eps=BN_EPSILON, tf_lowest_layer_anchors=True,
                       conf_loss="logistic")
    deploy = build_net(config, "deploy")
    weights = init_weights(deploy)
    layers = {layer.name: layer for layer in weights.layer}
    rows = keras_layer_map(backbone)
    for keras_conv, keras_bn, caffe, depthwise in rows:
        kernel = np.asarray(model.get_layer(keras_conv).get_weights()[0], np.float32)
        _fill(layers, caffe, kernel, model.get_layer(keras_bn).get_weights(), depthwise)
    if bgr:  # Keras ImageNet models take RGB; Caffe pipelines feed BGR
        first = layers[rows[0][2]]
        first.blobs[0].CopyFrom(protoio.array_to_blob(
            np.ascontiguousarray(protoio.blob_to_array(first.blobs[0])[:, ::-1])))
    out_dir = Path(out_dir)
    prototxt, caffemodel = atomic_write_many([
        # Keras MobileNets take x / 127.5 - 1, like TF's SSDs.
        (out_dir / "deploy.prototxt", with_preprocessing(protoio.prototxt_text(deploy), [TF_MEAN], TF_SCALE,
                                                         rgb=not bgr)),
        (out_dir / "deploy.caffemodel", protoio.serialize(weights))])
    return KerasResult(backbone, multiplier, len(rows), prototxt, caffemodel)
