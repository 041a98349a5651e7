"""Small layer builders shared by the backbones and heads.

A `NetBuilder` appends layers to a NetParameter and tracks every blob's
(channels, height, width) with Caffe's own size arithmetic, so the generator
knows the real feature-map sizes (for priors, TF padding and validation)
without running anything.

Conventions of the published nets that these builders reproduce:
- a conv is named after its top; its BatchNorm, Scale and ReLU work in place
  and are named `<conv>/bn`, `<conv>/scale`, `<conv>/relu`;
- learning rates: weights (m, decay m), conv bias (2m, decay 0), Scale
  (m, 0) and (2m, 0), BatchNorm statistics (0, 0);
- TF SAME padding on a stride-2 conv over an even-sized axis pads 0 before
  and 1 after, which Caffe cannot express: the conv pads 2 on that axis and a
  Slice drops the first row/column ("<conv>/margin1" for rows,
  "<conv>/margin2" for columns); the margins go to one Silence layer later.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from caffessd import caffe_pb2
from caffessd.errors import CaffessdError
from caffessd.generators.config import SSDConfig

Shape = Tuple[int, int, int]  # channels, height, width


class NetBuilder:
    """Appends layers for one stage of one configuration, tracking blob shapes."""

    def __init__(self, config: SSDConfig, stage: str):
        self.config = config
        self.stage = stage
        self.net = caffe_pb2.NetParameter()
        self.net.name = config.name or ""
        self.shapes: Dict[str, Shape] = {}
        self.margins: List[str] = []          # discarded TF-padding margins
        self.feature_candidates: List[str] = []  # blobs a head may attach to

    @property
    def lr_mult(self) -> float:
        """Learning-rate multiplier of pretrained layers in this stage."""
        return self.config.pretrained_lr_mult if self.stage == "train" else 1.0

    def layer(self, name: str, kind: str, bottoms: Sequence[str] = (), tops: Sequence[str] = ()):
        layer = self.net.layer.add()
        layer.name = name
        layer.type = kind
        layer.bottom.extend(bottoms)
        layer.top.extend(tops)
        return layer

    def shape(self, blob: str) -> Shape:
        return self.shapes[blob]


def add_params(layer, *specs: Tuple[float, float]) -> None:
    for lr_mult, decay_mult in specs:
        spec = layer.param.add()
        spec.lr_mult = lr_mult
        spec.decay_mult = decay_mult


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def add_conv(b: NetBuilder, name: str, bottom: str, num_output: int, kernel: int = 1,
             stride: int = 1, group: int = 1, bias: bool = True, lr_mult: Optional[float] = None,
             tf_pad: Optional[bool] = None, top: Optional[str] = None, weight_std: Optional[float] = None) -> str:
    """A Convolution named `name` whose (final) top is `top` (default: `name`); returns the top.
    Weights are filled by Caffe's msra filler (its FAN_OUT form for a net trained from
    scratch), or N(0, weight_std) when given.

    Padding is kernel//2 ("same" for odd kernels). With TF padding on and
    stride 2, an even-sized axis gets the pad-2-then-slice treatment.
    """
    channels, height, width = b.shape(bottom)
    m = b.lr_mult if lr_mult is None else lr_mult
    use_tf_pad = b.config.tf_pad if tf_pad is None else tf_pad
    pad = kernel // 2
    emulate = stride == 2 and kernel == 3 and use_tf_pad
    pad_h = 2 if emulate and height % 2 == 0 else pad
    pad_w = 2 if emulate and width % 2 == 0 else pad
    sliced = pad_h != pad or pad_w != pad
    top = top or name
    conv_top = f"{top}/pad" if sliced else top

    layer = b.layer(name, "Convolution", [bottom], [conv_top])
    add_params(layer, (m, m), *([(2 * m, 0.0)] if bias else []))
    param = layer.convolution_param
    param.num_output = num_output
    if not bias:
        param.bias_term = False
    if pad_h == pad_w:
        if pad_h:
            param.pad.append(pad_h)
    else:
        param.pad_h, param.pad_w = pad_h, pad_w
    param.kernel_size.append(kernel)
    if group > 1:
        param.group = group
    if stride > 1:
        param.stride.append(stride)
    if weight_std is None:
        param.weight_filler.type = "msra"
        if b.config.from_scratch:
            # He et al.'s fan-out form (torchvision's MobileNet init): a depthwise 3x3's fan-in
            # is 9, its fan-out 9 x channels, so its weights start ~sqrt(channels) times smaller
            # and move further per update; see docs/training-recipe.md.
            param.weight_filler.variance_norm = caffe_pb2.FillerParameter.FAN_OUT
    else:
        param.weight_filler.type, param.weight_filler.std = "gaussian", weight_std
    if bias:
        param.bias_filler.type = "constant"
        param.bias_filler.value = 0.0
    if group > 1 and group == num_output == channels and b.config.dw_engine == "caffe":
        # cuDNN's depthwise path needs far more memory; CAFFE's im2col does not.
        param.engine = caffe_pb2.ConvolutionParameter.CAFFE
    out_h = conv_output_size(height, kernel, stride, pad_h)
    out_w = conv_output_size(width, kernel, stride, pad_w)
    if min(out_h, out_w) < 1:
        # A stride-2 conv on a 1x1 map still gives 1x1 (as TF SAME padding does); only an
        # empty map is impossible.
        raise CaffessdError(
            f"input {b.config.input_width}x{b.config.input_height} is too small for the feature layers asked "
            f"for: '{name}' would turn a {height}x{width} map into {out_h}x{out_w}")
    b.shapes[conv_top] = (num_output, out_h, out_w)
    if sliced:
        _drop_first_row_and_column(b, top, conv_top, rows=pad_h != pad, cols=pad_w != pad)
    return top


def _drop_first_row_and_column(b: NetBuilder, top: str, padded: str, rows: bool, cols: bool) -> None:
    current = padded
    if rows:
        rows_top = f"{top}/tmp" if cols else top
        _slice_first(b, current, f"{top}/margin1", rows_top, axis=2)
        current = rows_top
    if cols:
        _slice_first(b, current, f"{top}/margin2", top, axis=3)


def _slice_first(b: NetBuilder, bottom: str, margin: str, rest: str, axis: int) -> None:
    # The published nets call every one of these layers "slice".
    layer = b.layer("slice", "Slice", [bottom], [margin, rest])
    layer.slice_param.slice_point.append(1)
    layer.slice_param.axis = axis
    c, h, w = b.shape(bottom)
    b.shapes[margin] = (c, 1, w) if axis == 2 else (c, h, 1)
    b.shapes[rest] = (c, h - 1, w) if axis == 2 else (c, h, w - 1)
    b.margins.append(margin)


def add_bn_scale(b: NetBuilder, blob: str, lr_mult: Optional[float] = None) -> None:
    m = b.lr_mult if lr_mult is None else lr_mult
    bn = b.layer(f"{blob}/bn", "BatchNorm", [blob], [blob])
    add_params(bn, (0.0, 0.0), (0.0, 0.0), (0.0, 0.0))
    if b.config.bn_eps is not None:
        bn.batch_norm_param.eps = b.config.bn_eps
    if b.stage == "train" and b.config.bn_moving_average is not None:
        bn.batch_norm_param.moving_average_fraction = b.config.bn_moving_average
    scale = b.layer(f"{blob}/scale", "Scale", [blob], [blob])
    add_params(scale, (m, 0.0), (2 * m, 0.0))
    scale.scale_param.filler.value = 1.0
    scale.scale_param.bias_term = True
    scale.scale_param.bias_filler.value = 0.0


def add_relu(b: NetBuilder, blob: str) -> None:
    b.layer(f"{blob}/relu", "ReLU6" if b.config.relu6 else "ReLU", [blob], [blob])


def conv_block(b: NetBuilder, name: str, bottom: str, num_output: int, kernel: int = 1,
               stride: int = 1, depthwise: bool = False, bn: bool = True, relu: bool = True,
               lr_mult: Optional[float] = None) -> str:
    """Conv (+ BatchNorm/Scale, or a conv bias when `bn` is off) (+ ReLU)."""
    group = b.shape(bottom)[0] if depthwise else 1
    if depthwise and num_output != group:
        raise ValueError(f"depthwise conv {name} must keep its {group} channels")
    top = add_conv(b, name, bottom, num_output, kernel, stride, group, bias=not bn, lr_mult=lr_mult)
    if bn:
        add_bn_scale(b, top, lr_mult)
    if relu:
        add_relu(b, top)
    b.feature_candidates.append(top)
    return top


def add_eltwise_sum(b: NetBuilder, name: str, bottoms: Sequence[str], top: str) -> str:
    b.layer(name, "Eltwise", bottoms, [top])
    b.shapes[top] = b.shape(bottoms[0])
    b.feature_candidates.append(top)
    return top


def add_silence(b: NetBuilder, name: str, blobs: Sequence[str]) -> None:
    if blobs:
        b.layer(name, "Silence", blobs, [])


def add_permute_flatten(b: NetBuilder, blob: str) -> str:
    """NCHW -> NHWC -> (N, H*W*C): the per-cell layout PriorBox order expects."""
    perm = b.layer(f"{blob}_perm", "Permute", [blob], [f"{blob}_perm"])
    perm.permute_param.order.extend([0, 2, 3, 1])
    flat = b.layer(f"{blob}_flat", "Flatten", [f"{blob}_perm"], [f"{blob}_flat"])
    flat.flatten_param.axis = 1
    return f"{blob}_flat"


def add_concat(b: NetBuilder, name: str, bottoms: Sequence[str], axis: int) -> str:
    layer = b.layer(name, "Concat", bottoms, [name])
    layer.concat_param.axis = axis
    return name


def add_reshape(b: NetBuilder, name: str, bottom: str, dims: Sequence[int], top: Optional[str] = None) -> str:
    layer = b.layer(name, "Reshape", [bottom], [top or name])
    layer.reshape_param.shape.dim.extend(dims)
    return top or name
