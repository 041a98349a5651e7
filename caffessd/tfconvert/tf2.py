"""TF2 Detection Zoo checkpoints (object-based) under the TF1 variable names.

TF2 models (e.g. ssd_mobilenet_v2_320x320_coco17_tpu-8, feature extractor
`ssd_mobilenet_v2_keras`) are Keras objects saved with tf.train.Checkpoint:
a variable's key is its path through the object graph, not a scope name:

  model/_feature_extractor/mobilenet_v2/layer_with_weights-N/kernel
      the Keras MobileNetV2 (tf.keras.applications layer order: each conv's
      layer, then its BatchNorm's), N counting layers that hold weights
  model/_feature_extractor/feature_map_generator/convolutions/I/J/...
      KerasMultiResolutionFeatureMaps: extra feature map I, its layers J
      (1x1 conv, BN, act, [depthwise 3x3, BN, act,] conv, BN, act)
  model/_box_predictor/_prediction_heads/box_encodings/I/_box_encoder_layers/J/...
  model/_box_predictor/_prediction_heads/class_predictions_with_background/I/_class_predictor_layers/J/...
  model/_box_predictor/_shared_nets/I/J/...   (num_layers_before_predictor)

(each key ends in '/.ATTRIBUTES/VARIABLE_VALUE'; a SavedModel's
variables/variables holds the same paths under its own root, e.g. '_model/').
This module renames them to the TF1 names of the same convolutions
(FeatureExtractor/MobilenetV2/expanded_conv_3/expand/weights, ...), so the
catalogue, the structure detection and the weight filling are shared with TF1
checkpoints. Kernel layouts are the same (HWIO, depthwise (H, W, C, 1)).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from caffessd.errors import CaffessdError, FormatError
from caffessd.tfconvert.tfimport import tensorflow

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_V2 = "FeatureExtractor/MobilenetV2/"
_BN_LEAVES = ("gamma", "beta", "moving_mean", "moving_variance")

_BACKBONE = re.compile(r"^(.*_feature_extractor/[^/]+)/layer_with_weights-(\d+)$")
_EXTRA = re.compile(r"^.*_feature_extractor/feature_map_generator/convolutions/(\d+)/(\d+)$")
_BOX = re.compile(r"^.*_box_predictor/_prediction_heads/box_encodings/(\d+)/_box_encoder_layers/(\d+)$")
_CLASS = re.compile(r"^.*_box_predictor/_prediction_heads/class_predictions_with_background/(\d+)"
                    r"/_class_predictor_layers/(\d+)$")
_SHARED = re.compile(r"^.*_box_predictor/_shared_nets/(\d+)/(\d+)$")

# What TF2 models caffessd cannot convert, recognised by their object paths.
_UNSUPPORTED = (
    ("_base_tower_layers_for_heads", "a weight-shared box predictor (SSD FPN / FPNLite / RetinaNet "
     "models such as ssd_mobilenet_v2_fpnlite_320x320 and _640x640)"),
    ("_fpn_features_generator", "FPN feature maps (ssd_mobilenet_v2_fpn_keras: FPNLite)"),
)


def is_object_based(names) -> bool:
    return any(name.endswith(SUFFIX) for name in names)


def keras_mobilenet_v2_scopes() -> List[str]:
    """TF1 scopes of the Keras MobileNetV2's convs, in Keras layer order."""
    scopes = ["Conv", "expanded_conv/depthwise", "expanded_conv/project"]
    for block in range(1, 17):
        scopes += [f"expanded_conv_{block}/{part}" for part in ("expand", "depthwise", "project")]
    return scopes + ["Conv_1"]


def _layers(shapes: Dict[str, tuple]) -> Dict[str, Dict[str, str]]:
    """Object path of each layer -> {variable leaf: checkpoint key}."""
    layers: Dict[str, Dict[str, str]] = {}
    for key in shapes:
        if not key.endswith(SUFFIX) or ".OPTIMIZER_SLOT" in key or key.count("/") < 3:
            continue  # save_counter, step, optimizer slots
        path, leaf = key[: -len(SUFFIX)].rsplit("/", 1)
        layers.setdefault(path, {})[leaf] = key
    return layers


def _kind(leaves: Dict[str, str]) -> str:
    if "depthwise_kernel" in leaves:
        return "depthwise"
    if "kernel" in leaves:
        return "conv"
    if "moving_mean" in leaves:
        return "bn"
    return "other"


class _Renamer:
    def __init__(self, shapes, source):
        self.shapes, self.source = shapes, source
        self.names: Dict[str, str] = {}   # TF1 name -> checkpoint key

    def conv(self, scope: str, leaves: Dict[str, str]) -> None:
        if "depthwise_kernel" in leaves:
            self.names[f"{scope}/depthwise_weights"] = leaves["depthwise_kernel"]
        else:
            self.names[f"{scope}/weights"] = leaves["kernel"]
        if "bias" in leaves:
            self.names[f"{scope}/biases"] = leaves["bias"]

    def bn(self, scope: str, leaves: Dict[str, str]) -> None:
        for leaf in _BN_LEAVES:
            if leaf in leaves:
                self.names[f"{scope}/BatchNorm/{leaf}"] = leaves[leaf]

    def cout(self, leaves: Dict[str, str]) -> int:
        key = leaves.get("kernel") or leaves.get("depthwise_kernel")
        shape = self.shapes[key]
        return int(shape[2] if "kernel" not in leaves else shape[3])

    def kernel_size(self, leaves: Dict[str, str]) -> int:
        key = leaves.get("kernel") or leaves.get("depthwise_kernel")
        return int(self.shapes[key][0])


def _sequences(layers, pattern) -> Dict[int, List[Dict[str, str]]]:
    """Per index I, the weighted layers of list I in order J."""
    found: Dict[int, List[Tuple[int, Dict[str, str]]]] = {}
    for path, leaves in layers.items():
        match = pattern.match(path)
        if match and _kind(leaves) != "other":
            found.setdefault(int(match.group(1)), []).append((int(match.group(2)), leaves))
    return {i: [leaves for _, leaves in sorted(rows, key=lambda r: r[0])] for i, rows in found.items()}


def _pairs(rows: List[Dict[str, str]], where: str, source) -> List[Tuple[Dict[str, str], Optional[Dict[str, str]]]]:
    """(conv, its BatchNorm or None) in order."""
    out = []
    for leaves in rows:
        kind = _kind(leaves)
        if kind == "bn":
            if not out or out[-1][1] is not None:
                raise CaffessdError(f"{source}: a BatchNorm without a convolution in {where}")
            out[-1] = (out[-1][0], leaves)
        else:
            out.append((leaves, None))
    return out


def tf1_names(shapes: Dict[str, tuple], source) -> Dict[str, str]:
    """TF1 variable name -> object-based checkpoint key, for an SSD MobileNetV2 Keras model."""
    for marker, what in _UNSUPPORTED:
        if any(marker in key for key in shapes):
            raise CaffessdError(f"{source}: {what} is not supported: gen-model has no FPN head, "
                                "weight-shared predictor or multiscale anchors to convert it to")
    layers = _layers(shapes)
    r = _Renamer(shapes, source)
    backbone: Dict[str, Dict[int, Dict[str, str]]] = {}
    for path, leaves in layers.items():
        match = _BACKBONE.match(path)
        if match:
            backbone.setdefault(match.group(1), {})[int(match.group(2))] = leaves
    if len(backbone) != 1:
        raise CaffessdError(f"{source}: not an SSD MobileNetV2 Keras checkpoint (no single "
                            "'_feature_extractor/<backbone>/layer_with_weights-N' model)")
    (_, weighted), = backbone.items()
    scopes = keras_mobilenet_v2_scopes()
    if sorted(weighted) != list(range(2 * len(scopes))):
        raise CaffessdError(f"{source}: the Keras backbone has {len(weighted)} layers with weights, "
                            f"a MobileNetV2 {2 * len(scopes)} (conv and BatchNorm per conv)")
    for k, scope in enumerate(scopes):
        conv, bn = weighted[2 * k], weighted[2 * k + 1]
        if _kind(conv) not in ("conv", "depthwise") or _kind(bn) != "bn":
            raise CaffessdError(f"{source}: backbone layer_with_weights-{2 * k} is not the conv "
                                f"of MobileNetV2's '{scope}'")
        r.conv(_V2 + scope, conv)
        r.bn(_V2 + scope, bn)
    for index, rows in _sequences(layers, _EXTRA).items():
        pairs = _pairs(rows, f"extra feature map {index}", source)
        last_conv = pairs[-1][0]
        full, size = r.cout(last_conv), max(r.kernel_size(c) for c, _ in pairs)
        first = f"{_V2}layer_19_1_Conv2d_{index}_1x1_{r.cout(pairs[0][0])}"
        second = f"{_V2}layer_19_2_Conv2d_{index}_{size}x{size}_s2_{full}"
        scopes = [first] + ([second + "_depthwise", second] if len(pairs) == 3 else [second])
        if len(scopes) != len(pairs):
            raise CaffessdError(f"{source}: extra feature map {index} has {len(pairs)} convolutions")
        for scope, (conv, bn) in zip(scopes, pairs):
            r.conv(scope, conv)
            if bn is not None:
                r.bn(scope, bn)
    for pattern, name in ((_BOX, "BoxEncodingPredictor"), (_CLASS, "ClassPredictor")):
        for index, rows in _sequences(layers, pattern).items():
            for conv, bn in _pairs(rows, f"box predictor {index}", source):
                scope = f"BoxPredictor_{index}/{name}" + ("_depthwise" if _kind(conv) == "depthwise" else "")
                r.conv(scope, conv)
                if bn is not None:
                    r.bn(scope, bn)
    for index, rows in _sequences(layers, _SHARED).items():
        for j, (conv, bn) in enumerate(_pairs(rows, f"box predictor {index}", source)):
            scope = f"BoxPredictor_{index}/Conv2d_{j}_1x1_{r.cout(conv)}"
            r.conv(scope, conv)
            if bn is not None:
                r.bn(scope, bn)
    return r.names


# ---------------------------------------------------------------- zoo folders

def zoo_checkpoint(path: Path) -> Optional[Tuple[str, Optional[Path]]]:
    """(checkpoint prefix, pipeline.config or None) for a TF2 zoo folder or a
    SavedModel folder; None when `path` is neither."""
    tf = tensorflow("convert-tf")

    path = Path(path)
    if not path.is_dir():
        return None
    if (path / "saved_model.pb").is_file():  # the SavedModel folder itself
        return _saved_model_variables(path), _pipeline_in(path.parent)
    if (path / "checkpoint").is_dir():
        latest = tf.train.latest_checkpoint(str(path / "checkpoint"))
        if latest is None:
            raise FormatError(path / "checkpoint", "folder has no 'checkpoint' file naming a checkpoint")
        return latest, _pipeline_in(path)
    if (path / "saved_model" / "saved_model.pb").is_file():
        return _saved_model_variables(path / "saved_model"), _pipeline_in(path)
    return None


def zoo_pipeline(path) -> Optional[Path]:
    """The pipeline.config of a TF2 zoo folder (or of the zoo folder around a SavedModel)."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / "saved_model.pb").is_file():
        return _pipeline_in(path.parent)
    if (path / "checkpoint").is_dir() or (path / "saved_model" / "saved_model.pb").is_file():
        return _pipeline_in(path)
    return None


def _saved_model_variables(folder: Path) -> str:
    prefix = folder / "variables" / "variables"
    if not Path(str(prefix) + ".index").is_file():
        raise FormatError(folder, "SavedModel has no variables/variables.index")
    return str(prefix)


def _pipeline_in(folder: Path) -> Optional[Path]:
    config = folder / "pipeline.config"
    return config if config.is_file() else None
