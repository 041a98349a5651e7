"""Every option of a generated MobileNet-SSD / MobileNetV2-SSD / SSDLite net.

`SSDConfig` is plain data. Options left at ``None`` take the value of the
published nets for the chosen backbone (see `SSDConfig.resolved`), so that the
defaults reproduce chuanqi305's MobileNet-SSD (mnv1) and MobileNetv2-SSDLite
(mnv2) prototxts. `validate()` raises `CaffessdError` with a one-line reason.

`PriorSpec` describes the default boxes of one head the way Caffe's PriorBox
does (sizes in input pixels). It is also the interface for converters that
must reproduce another framework's anchors exactly: pass a list of them as
`SSDConfig.prior_specs`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple

from caffessd.errors import CaffessdError
from caffessd.generators import schedule
from caffessd.layers import expand_aspect_ratios

BACKBONES = ("mnv1", "mnv2")
# Feature layers the heads attach to by default, as the published nets do
# (chuanqi305's MobileNet-SSD and MobileNetv2-SSDLite).
DEFAULT_FEATURE_LAYERS = {
    "mnv1": ("conv11", "conv13", "conv14_2", "conv15_2", "conv16_2", "conv17_2"),
    "mnv2": ("conv_13/expand", "Conv_1", "layer_19_2_2", "layer_19_2_3", "layer_19_2_4", "layer_19_2_5"),
}
HEADS = ("ssd", "ssdlite")
STAGES = ("train", "test", "deploy")
BN_MODES = ("all", "heads", "none")
DW_ENGINES = ("default", "caffe")
EXTRA_STYLES = ("depthwise", "plain")
CONF_LOSSES = ("softmax", "logistic")
WIDTH_RANGE = (0.25, 1.4)

# TensorFlow's SSD anchor generator gives the lowest layer a square box of this
# scale (reduce_boxes_in_lowest_layer), independent of min_scale.
TF_LOWEST_LAYER_SMALL_SCALE = 0.1


@dataclass
class PriorSpec:
    """Default boxes of one head, in input pixels, as a Caffe PriorBox takes them.

    Per cell Caffe emits, for each min size: the square of min size, the square
    of sqrt(min*max) when a max size is given, then one box per extra aspect
    ratio. `steps` is (step_h, step_w) in pixels; None lets PriorBox derive them
    from the real feature map (input size / map size, per axis).

    `small_square`: build this head's priors the way TensorFlow's lowest layer
    has them: first a square of `small_square` pixels, then the non-square
    boxes of `min_sizes[0]` (its own square is sliced away). Needs exactly one
    min size and no max size. See heads.add_tf_lowest_priors.
    """

    min_sizes: List[float]
    max_sizes: List[float] = field(default_factory=list)
    aspect_ratios: List[float] = field(default_factory=lambda: [2.0])
    flip: bool = True
    clip: bool = False
    steps: Optional[Tuple[float, float]] = None
    offset: float = 0.5
    variance: Tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    small_square: Optional[float] = None

    def boxes_per_cell(self) -> int:
        # With small_square one square is swapped for another: same count.
        ratios = expand_aspect_ratios(self.aspect_ratios, self.flip)
        return len(ratios) * len(self.min_sizes) + len(self.max_sizes)

    def validate(self, where: str) -> None:
        if not self.min_sizes:
            raise CaffessdError(f"{where}: needs at least one min size")
        if any(s <= 0 for s in self.min_sizes + self.max_sizes):
            raise CaffessdError(f"{where}: prior sizes must be positive")
        if self.max_sizes and len(self.max_sizes) != len(self.min_sizes):
            raise CaffessdError(f"{where}: {len(self.max_sizes)} max sizes for {len(self.min_sizes)} min sizes")
        for lo, hi in zip(self.min_sizes, self.max_sizes):
            if hi <= lo:
                raise CaffessdError(f"{where}: max size {_num(hi)} must be larger than min size {_num(lo)}")
        if any(ar <= 0 for ar in self.aspect_ratios):
            raise CaffessdError(f"{where}: aspect ratios must be positive")
        if self.steps is not None and (len(self.steps) != 2 or min(self.steps) <= 0):
            raise CaffessdError(f"{where}: steps must be two positive numbers (step_h, step_w)")
        if self.small_square is not None:
            if len(self.min_sizes) != 1 or self.max_sizes:
                raise CaffessdError(f"{where}: TF lowest-layer anchors need one min size and no max size")
            if len(expand_aspect_ratios(self.aspect_ratios, self.flip)) < 2:
                raise CaffessdError(f"{where}: TF lowest-layer anchors need an aspect ratio other than 1")


@dataclass
class SSDConfig:
    """All options of `caffessd gen-model`; see the README for each one."""

    backbone: str = "mnv1"
    head: str = "ssd"
    width: float = 1.0
    # Smallest channel count of a backbone conv after the width multiplier
    # (TF-slim's min_depth: 8 in the MobileNets, 16 in the TF-OD-API SSD configs).
    min_depth: int = 8
    # mnv2 only: Conv_1 keeps 1280 channels below width 1 (TF-slim's
    # finegrain_classification_mode; Keras MobileNetV2 always does this).
    finegrain: bool = False
    input_width: int = 300
    input_height: int = 300
    num_classes: int = 21
    labelmap: Optional[str] = None          # path written into the data layers
    feature_layers: Optional[List[str]] = None

    # priors: TF-OD-API scales, or explicit sizes, or full per-head specs
    min_scale: float = 0.2
    max_scale: float = 0.95
    min_sizes: Optional[List[float]] = None
    max_sizes: Optional[List[Optional[float]]] = None
    aspect_ratios: Optional[List[List[float]]] = None
    prior_specs: Optional[List[PriorSpec]] = None
    tf_lowest_layer_anchors: bool = False
    clip: bool = False
    explicit_steps: bool = False

    # layer style
    # Extra layers: "depthwise" (1x1, depthwise 3x3/2, 1x1) or "plain" (1x1, 3x3/2).
    # None: plain for mnv1 with SSD heads, else depthwise (as published).
    extra_layers: Optional[str] = None
    relu6: bool = False
    tf_pad: bool = False
    bn: str = "all"
    bn_eps: Optional[float] = None
    dw_engine: str = "default"
    head_kernel: Optional[int] = None
    # 1x1 conv (+BN, ReLU) layers before both predictors of head i, with
    # predictor_depths[i] channels (0: none), as TF's num_layers_before_predictor.
    predictor_layers: int = 0
    predictor_depths: Optional[List[int]] = None
    new_conf_layers: bool = False
    conf_loss: Optional[str] = None
    pretrained_lr_mult: Optional[float] = None

    # data layers
    mean: Tuple[float, ...] = (127.5,)
    scale: float = 0.007843
    lmdb_train: str = "trainval_lmdb"
    lmdb_test: str = "test_lmdb"
    batch_size: int = 24
    test_batch_size: int = 8

    # detection output (the test net keeps more boxes and a low threshold for mAP)
    nms_threshold: float = 0.45                   # both nets, unless one of the two below says otherwise
    test_nms_threshold: Optional[float] = None     # e.g. the published COCO nets: test 0.45, deploy 0.6
    deploy_nms_threshold: Optional[float] = None
    conf_threshold: Optional[float] = None
    deploy_top_k: int = 100
    deploy_keep_top_k: int = 100
    test_top_k: int = 400
    test_keep_top_k: int = 200
    test_conf_threshold: float = 0.01

    # solver: None takes the published schedule, or the one --max-iter and
    # --from-scratch ask for (generators/schedule.py)
    lr: Optional[float] = None
    iter_size: int = 1
    max_iter: Optional[int] = None
    snapshot: Optional[int] = None
    snapshot_prefix: Optional[str] = None
    stepvalues: Optional[List[int]] = None
    test_iter: int = 673
    test_interval: Optional[int] = None
    weight_decay: float = 0.00005
    solver_type: Optional[str] = None
    # Training starts from the fillers, not from converted weights.
    from_scratch: bool = False
    # Train-net BatchNorm moving_average_fraction (None: Caffe's 0.999, unwritten).
    bn_moving_average: Optional[float] = None

    name: Optional[str] = None

    # ------------------------------------------------------------ derived values

    @property
    def ref_size(self) -> int:
        """The side that TF-style scales multiply: the shorter input side, so
        that priors stay square in pixels (as TF's anchor generator makes them)."""
        return min(self.input_width, self.input_height)

    @property
    def uses_bn_in_backbone(self) -> bool:
        return self.bn == "all"

    @property
    def uses_bn_in_heads(self) -> bool:
        return self.bn in ("all", "heads")

    def resolved(self) -> "SSDConfig":
        """A copy with every backbone-dependent default filled in."""
        mnv1 = self.backbone == "mnv1"
        filled = replace(self)
        if filled.head_kernel is None:
            filled.head_kernel = 1 if mnv1 else 3
        if filled.extra_layers is None:
            filled.extra_layers = "plain" if mnv1 and self.head == "ssd" else "depthwise"
        if filled.conf_loss is None:
            # The published MobileNetV2 nets keep TF's sigmoid scores (their weights come from
            # TF); from scratch there is nothing to match, and softmax learned faster.
            filled.conf_loss = "softmax" if mnv1 or self.from_scratch else "logistic"
        if filled.pretrained_lr_mult is None:
            filled.pretrained_lr_mult = 1.0 if self.from_scratch or not mnv1 else 0.1
        if filled.bn_eps is None and not mnv1:
            filled.bn_eps = 0.001  # TensorFlow's MobileNetV2 batch norm epsilon
        if filled.conf_threshold is None:
            filled.conf_threshold = 0.35 if self.head == "ssdlite" else 0.25
        if filled.feature_layers is None:
            filled.feature_layers = list(DEFAULT_FEATURE_LAYERS[self.backbone])
        if filled.name is None:
            filled.name = _default_name(self.backbone, self.head)
        _resolve_schedule(filled, self)
        return filled

    # ------------------------------------------------------------ validation

    def validate(self) -> None:
        """Raise CaffessdError naming the first option that cannot work."""
        _choice("--backbone", self.backbone, BACKBONES)
        _choice("--head", self.head, HEADS)
        _choice("--bn", self.bn, BN_MODES)
        _choice("--dw-engine", self.dw_engine, DW_ENGINES)
        if self.extra_layers is not None:
            _choice("--extra-layers", self.extra_layers, EXTRA_STYLES)
        if not isinstance(self.min_depth, int) or not 1 <= self.min_depth <= 1024:
            raise CaffessdError(f"--min-depth must be an integer from 1 to 1024, got {_num(self.min_depth)}")
        if self.conf_loss is not None:
            _choice("--conf-loss", self.conf_loss, CONF_LOSSES)
        lo, hi = WIDTH_RANGE
        if not (isinstance(self.width, (int, float)) and math.isfinite(self.width) and lo <= self.width <= hi):
            raise CaffessdError(f"--width must be between {lo} and {hi}, got {_num(self.width)}")
        if self.input_width < 1 or self.input_height < 1:
            raise CaffessdError(f"--input must be positive, got {self.input_width}x{self.input_height}")
        if self.num_classes < 2:
            raise CaffessdError(f"--classes must be at least 2 (background and one class), got {self.num_classes}")
        if not 0 < self.min_scale < self.max_scale <= 1.0:
            raise CaffessdError(f"need 0 < --min-scale < --max-scale <= 1, got {_num(self.min_scale)} and {_num(self.max_scale)}")
        if self.predictor_layers < 0 or (self.predictor_layers and not self.predictor_depths):
            raise CaffessdError("layers before the predictor need a non-negative count and per-head depths")
        if self.head_kernel is not None and self.head_kernel not in (1, 3):
            raise CaffessdError(f"--head-kernel must be 1 or 3, got {self.head_kernel}")
        if len(self.mean) not in (1, 3):
            raise CaffessdError(f"--mean takes one value or three (B,G,R), got {len(self.mean)}")
        if self.scale <= 0:
            raise CaffessdError(f"--scale must be positive, got {_num(self.scale)}")
        for option, value in (("--batch-size", self.batch_size), ("--iter-size", self.iter_size),
                              ("test batch size", self.test_batch_size)):
            if value < 1:
                raise CaffessdError(f"{option} must be at least 1, got {value}")
        if (self.max_iter or 0) < 0 or (self.snapshot or 0) < 0 or (self.test_interval or 0) < 0:
            raise CaffessdError("--max-iter, --snapshot and the test interval must not be negative")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise CaffessdError(f"--lr must be positive, got {_num(self.lr)}")
        if self.bn_moving_average is not None and not 0 < self.bn_moving_average < 1:
            raise CaffessdError(f"BatchNorm moving average fraction must be in (0, 1), got {_num(self.bn_moving_average)}")
        if self.feature_layers is not None and not self.feature_layers:
            raise CaffessdError("--feature-layers is empty")
        if self.feature_layers and len(set(self.feature_layers)) != len(self.feature_layers):
            raise CaffessdError("--feature-layers names a layer twice")
        if self.conf_threshold is not None and not 0 <= self.conf_threshold < 1:
            raise CaffessdError(f"--conf-threshold must be in [0, 1), got {_num(self.conf_threshold)}")
        for option, value in (("--nms-threshold", self.nms_threshold),
                              ("--test-nms-threshold", self.test_nms_threshold),
                              ("--deploy-nms-threshold", self.deploy_nms_threshold)):
            if value is not None and not (math.isfinite(value) and 0 < value <= 1):
                raise CaffessdError(f"{option} must be in (0, 1], got {_num(value)}")
        for option, value in (("--top-k", self.deploy_top_k), ("--top-k", self.test_top_k),
                              ("--keep-top-k", self.deploy_keep_top_k), ("--keep-top-k", self.test_keep_top_k)):
            if value != -1 and value < 1:
                raise CaffessdError(f"{option} must be at least 1 (or -1 for all), got {value}")
        if self.prior_specs is not None:
            for i, spec in enumerate(self.prior_specs):
                spec.validate(f"prior spec {i}")


def _resolve_schedule(filled: "SSDConfig", given: "SSDConfig") -> None:
    """Solver settings the user left unset: published, scaled to --max-iter, or from scratch."""
    if filled.max_iter is None:
        filled.max_iter = schedule.PUBLISHED_MAX_ITER
    if filled.test_interval is None:
        filled.test_interval = schedule.interval(given.max_iter, schedule.PUBLISHED_TEST_INTERVAL)
    if filled.snapshot is None:
        filled.snapshot = schedule.interval(given.max_iter, schedule.PUBLISHED_SNAPSHOT)
    scratch = schedule.FROM_SCRATCH if given.from_scratch else None
    if filled.solver_type is None:
        filled.solver_type = scratch.solver_type if scratch else schedule.PUBLISHED_SOLVER
    if filled.lr is None:
        filled.lr = scratch.lr if scratch else schedule.PUBLISHED_LR
    if filled.stepvalues is None:
        filled.stepvalues = [] if scratch else schedule.stepvalues(filled.max_iter)
    if filled.bn_moving_average is None:
        filled.bn_moving_average = schedule.bn_moving_average(given.max_iter, given.from_scratch)


def _default_name(backbone: str, head: str) -> str:
    # The names of the published nets (their mnv2 nets are all "MobileNetv2-SSDLite").
    if backbone == "mnv1":
        return "MobileNet-SSD" if head == "ssd" else "MobileNet-SSDLite"
    return "MobileNetv2-SSDLite" if head == "ssdlite" else "MobileNetv2-SSD"


def _choice(option: str, value, allowed) -> None:
    if value not in allowed:
        raise CaffessdError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else repr(value)
