"""Working out which model a checkpoint holds from its variables' names and shapes.

The architecture shows in the variable names, the class count and anchors per
layer in the predictor biases, the box-predictor kernel in its weights, and the
width multiplier in the backbone depths (tried against the catalogue).
"""
from __future__ import annotations

from typing import List, Optional

from caffessd.errors import CaffessdError

from .checkpoint import VariableStore
from .pipeline import PipelineConfig
from .zoo import ModelSpec, build_spec

_MULTIPLIERS = (1.0, 0.75, 0.5, 0.35, 0.25, 1.3, 1.4)


def detect_architecture(store: VariableStore, cfg: PipelineConfig) -> str:
    v1 = "FeatureExtractor/MobilenetV1/Conv2d_0/weights" in store
    v2 = "FeatureExtractor/MobilenetV2/Conv/weights" in store
    if not (v1 or v2):
        raise CaffessdError(f"{store.source}: not an SSD MobileNet checkpoint (no "
                            "FeatureExtractor/MobilenetV1/Conv2d_0/weights or "
                            "FeatureExtractor/MobilenetV2/Conv/weights)")
    if v1:
        arch = "ssd_mobilenet_v1"
    else:
        lite = "BoxPredictor_0/BoxEncodingPredictor_depthwise/depthwise_weights" in store
        arch = "ssdlite_mobilenet_v2" if lite else "ssd_mobilenet_v2"
    if cfg.architecture and cfg.architecture != arch:
        raise CaffessdError(f"pipeline.config describes {cfg.architecture} but the checkpoint "
                            f"holds {arch}")
    return arch


def _predictor_shape(store: VariableStore, index: int, which: str) -> Optional[tuple]:
    return store.shape(f"BoxPredictor_{index}/{which}/biases")


def anchors_and_classes(store: VariableStore) -> tuple:
    """(anchors per feature map, classes without background) from predictor biases."""
    anchors: List[int] = []
    classes = None
    index = 0
    while _predictor_shape(store, index, "BoxEncodingPredictor") is not None:
        box = _predictor_shape(store, index, "BoxEncodingPredictor")[0]
        cls_shape = _predictor_shape(store, index, "ClassPredictor")
        if cls_shape is None:
            raise CaffessdError(f"{store.source}: variable 'BoxPredictor_{index}/ClassPredictor/biases' "
                                "is missing")
        if box % 4:
            raise CaffessdError(f"{store.source}: BoxPredictor_{index}/BoxEncodingPredictor/biases has "
                                f"{box} values, not 4 per anchor")
        count = box // 4
        per_anchor, rest = divmod(cls_shape[0], count)
        if rest or per_anchor < 2:
            raise CaffessdError(f"{store.source}: BoxPredictor_{index}/ClassPredictor/biases has "
                                f"{cls_shape[0]} values for {count} anchors")
        if classes is not None and per_anchor - 1 != classes:
            raise CaffessdError(f"{store.source}: box predictors disagree on the class count")
        classes = per_anchor - 1
        anchors.append(count)
        index += 1
    if not anchors:
        raise CaffessdError(f"{store.source}: variable 'BoxPredictor_0/BoxEncodingPredictor/biases' "
                            "is missing")
    return anchors, classes


def box_kernel(store: VariableStore, arch: str) -> int:
    name = ("BoxPredictor_0/BoxEncodingPredictor_depthwise/depthwise_weights"
            if arch.startswith("ssdlite") else "BoxPredictor_0/BoxEncodingPredictor/weights")
    shape = store.shape(name)
    if shape is None:
        raise CaffessdError(f"{store.source}: variable '{name}' is missing")
    return int(shape[0])


def _fits(spec: ModelSpec, store: VariableStore) -> bool:
    # The backbone and extras fix the multiplier; heads are checked when read.
    for conv in list(spec.backbone) + list(spec.extras):
        if store.shape(conv.weight_name) != conv.weight_shape:
            return False
    return True


def detect_spec(store: VariableStore, cfg: PipelineConfig) -> ModelSpec:
    arch = detect_architecture(store, cfg)
    anchors, classes = anchors_and_classes(store)
    if cfg.num_classes is not None and cfg.num_classes != classes:
        raise CaffessdError(f"pipeline.config says num_classes {cfg.num_classes} but the checkpoint's "
                            f"class predictors have {classes} classes")
    if len(anchors) != 6:
        raise CaffessdError(f"{store.source}: {len(anchors)} box predictors, expected 6")
    kernel = box_kernel(store, arch)
    min_depth = cfg.min_depth or 16
    tried = [cfg.depth_multiplier] if cfg.depth_multiplier else list(_MULTIPLIERS)
    for mult in tried:
        spec = build_spec(arch, classes, mult, min_depth, tuple(anchors), kernel)
        if _fits(spec, store):
            return spec
    # Report the first variable that does not fit the (first) candidate.
    spec = build_spec(arch, classes, tried[0], min_depth, tuple(anchors), kernel)
    for conv in list(spec.backbone) + list(spec.extras):
        store.get(conv.weight_name, conv.weight_shape)  # raises, naming the variable
    raise CaffessdError(f"{store.source}: cannot work out the width multiplier")
