"""A net's priors as its MultiBoxLoss sees them: every PriorBox layer at the
input size the data layer resizes to, in the order the prior blob joins
them, with the matching rule of the loss layer.

Works on train, test and deploy nets: data, loss and output layers are set
aside and an Input of the data layer's resize_param size (or the deploy
net's input, or `input_size`) feeds the rest, so only the feature-map sizes
decide the priors, as in Caffe's PriorBox.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from caffessd import caffe_pb2, protoio
from caffessd.boxmatch import MatchRule
from caffessd.errors import CaffessdError, FormatError
from caffessd.layers import DATA_LAYER_TYPES, LOSS_LAYER_TYPES
from caffessd.net import Net, filter_phase
from caffessd.priorbox import cell_box_sizes, prior_boxes

RESIZE_MODES = {1: "WARP", 2: "FIT_SMALL_SIZE", 3: "FIT_LARGE_SIZE_AND_PAD"}
SET_ASIDE = DATA_LAYER_TYPES | LOSS_LAYER_TYPES | {"DetectionOutput", "DetectionEvaluate", "Silence"}


@dataclass
class PriorLayer:
    """One PriorBox layer: its feature map, the image size it divides by,
    its per-cell prior shapes (width, height in input pixels) and its slice
    of the prior blob."""

    name: str
    param: caffe_pb2.PriorBoxParameter
    feature_hw: Tuple[int, int]
    image_hw: Tuple[int, int]
    start: int = 0
    count: int = 0

    @property
    def shapes(self) -> List[Tuple[float, float]]:
        return [(float(w), float(h)) for w, h in cell_box_sizes(self.param)]

    @property
    def stop(self) -> int:
        return self.start + self.count

    def boxes(self) -> np.ndarray:
        """(H*W*K, 4) normalised corners, as PriorBox writes them."""
        return prior_boxes(self.param, self.feature_hw, self.image_hw)[0, 0].reshape(-1, 4)

    def step(self) -> Tuple[float, float]:
        """(step_h, step_w) in input pixels, as PriorBox derives it."""
        p = self.param
        if p.HasField("step_h") or p.HasField("step_w"):
            return float(p.step_h), float(p.step_w)
        if p.HasField("step") and p.step > 0:
            return float(p.step), float(p.step)
        return (float(np.float32(self.image_hw[0]) / np.float32(self.feature_hw[0])),
                float(np.float32(self.image_hw[1]) / np.float32(self.feature_hw[1])))


@dataclass
class NetPriors:
    """Everything the matching needs from a net."""

    source: str
    input_hw: Tuple[int, int]
    resize_mode: str                       # WARP, FIT_LARGE_SIZE_AND_PAD, or INPUT (a deploy net's fixed input)
    layers: List[PriorLayer]
    rule: MatchRule = field(default_factory=MatchRule)
    use_difficult_gt: bool = True
    boxes: np.ndarray = None               # (P, 4) normalised, the prior blob's order

    def __post_init__(self):
        if self.boxes is None:
            start = 0
            parts = []
            for layer in self.layers:
                part = layer.boxes()
                layer.start, layer.count = start, len(part)
                start += len(part)
                parts.append(part)
            self.boxes = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 4), np.float32)

    @property
    def layer_of_prior(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.layers)), [layer.count for layer in self.layers])

    def with_params(self, params: Sequence[caffe_pb2.PriorBoxParameter]) -> "NetPriors":
        """The same net with other PriorBox parameters (same feature maps)."""
        layers = [replace(layer, param=param) for layer, param in zip(self.layers, params)]
        return NetPriors(self.source, self.input_hw, self.resize_mode, layers, self.rule, self.use_difficult_gt)


def _input_size(param: caffe_pb2.NetParameter, input_size, source) -> Tuple[Tuple[int, int], str]:
    """((height, width), resize mode) of the images the priors are made for."""
    if input_size is not None:
        width, height = input_size
        return (int(height), int(width)), "WARP"
    for layer in param.layer:
        if layer.type in DATA_LAYER_TYPES:
            tp = layer.transform_param
            resize = tp.resize_param
            if tp.HasField("resize_param") and resize.height and resize.width:
                mode = RESIZE_MODES.get(resize.resize_mode, "WARP")
                if mode == "FIT_SMALL_SIZE":
                    raise CaffessdError(f"{source}: data layer '{layer.name}' resizes with FIT_SMALL_SIZE (the input "
                                        "size varies per image): give --input WIDTHxHEIGHT to analyse one size")
                return (int(resize.height), int(resize.width)), mode
            if tp.crop_size or (tp.crop_h and tp.crop_w):
                return ((tp.crop_size or tp.crop_h), (tp.crop_size or tp.crop_w)), "WARP"
            raise CaffessdError(f"{source}: data layer '{layer.name}' has no resize_param: give --input WIDTHxHEIGHT")
    net = Net(param, source=str(source))
    shapes = list(net.input_shapes().values())
    if shapes and len(shapes[0]) == 4:
        return (int(shapes[0][2]), int(shapes[0][3])), "INPUT"
    raise CaffessdError(f"{source}: the net declares no input size: give --input WIDTHxHEIGHT")


def _image_blob(param: caffe_pb2.NetParameter) -> str:
    for layer in param.layer:
        if layer.type in DATA_LAYER_TYPES or layer.type == "Input":
            return layer.top[0]
    if param.input:
        return param.input[0]
    return "data"


def _prior_net(param: caffe_pb2.NetParameter, blob: str, input_hw) -> caffe_pb2.NetParameter:
    """The net without data, loss and output layers, fed by one Input."""
    kept = caffe_pb2.NetParameter()
    kept.name = param.name
    inp = kept.layer.add()
    inp.name, inp.type = "fit_priors_input", "Input"
    inp.top.append(blob)
    inp.input_param.shape.add().dim.extend([1, 3, int(input_hw[0]), int(input_hw[1])])
    for layer in param.layer:
        if layer.type not in SET_ASIDE and layer.type != "Input":
            kept.layer.add().CopyFrom(layer)
    return kept


def _prior_order(param: caffe_pb2.NetParameter, prior_layers: Dict[str, caffe_pb2.LayerParameter], source) -> List[str]:
    """PriorBox layer names in the order the loss (or DetectionOutput) reads them."""
    consumer = next((layer for layer in param.layer if layer.type in ("MultiBoxLoss", "DetectionOutput")
                     and len(layer.bottom) >= 3), None)
    if consumer is None:
        return list(prior_layers)
    producers = {}
    for layer in param.layer:
        for top in layer.top:
            producers[top] = layer

    def resolve(blob: str, depth: int = 0) -> List[str]:
        layer = producers.get(blob)
        if layer is None or depth > 64:
            raise CaffessdError(f"{source}: cannot follow the prior blob '{blob}'")
        if layer.type == "PriorBox":
            return [layer.name]
        if layer.type == "Concat" and layer.concat_param.axis == 2:
            return [name for bottom in layer.bottom for name in resolve(bottom, depth + 1)]
        raise CaffessdError(f"{source}: the prior blob passes through layer '{layer.name}' ({layer.type}); "
                            "fit-priors follows PriorBox layers joined by Concat (axis 2)")

    return resolve(consumer.bottom[2])


def load_net_priors(net_path, input_size: Optional[Tuple[int, int]] = None) -> NetPriors:
    """The priors and matching rule of the net at `net_path` (a prototxt).

    `input_size` (width, height) replaces the data layer's size."""
    path = Path(net_path)
    full = protoio.read_net(path, binary_ok=False)
    train = filter_phase(full, "TRAIN")
    has_loss = any(layer.type == "MultiBoxLoss" for layer in train.layer)
    param = train if has_loss else filter_phase(full, "TEST")
    input_hw, mode = _input_size(param, input_size, path)
    prior_net = _prior_net(param, _image_blob(param), input_hw)
    net = Net(prior_net, source=str(path))
    found: Dict[str, PriorLayer] = {}
    for info in net.walk(with_weights=False):
        if info.type == "PriorBox":
            if len(info.input_shapes) < 2:
                raise FormatError(path, f"PriorBox '{info.name}' needs the feature map and the image as bottoms")
            feature = tuple(int(d) for d in info.input_shapes[0][2:4])
            image = tuple(int(d) for d in info.input_shapes[1][2:4])
            found[info.name] = PriorLayer(info.name, copy.deepcopy(info.layer.prior_box_param), feature, image)
    if not found:
        raise FormatError(path, "has no PriorBox layer: fit-priors needs an SSD net")
    order = _prior_order(param, {name: None for name in found}, path)
    loss = next((layer for layer in param.layer if layer.type == "MultiBoxLoss"), None)
    rule = MatchRule.from_param(loss.multibox_loss_param) if loss is not None else MatchRule()
    difficult = loss.multibox_loss_param.use_difficult_gt if loss is not None else True
    return NetPriors(str(path), input_hw, mode, [found[name] for name in order], rule, difficult)
