"""Small nets with random weights for the merge-bn tests.

Weights are random but shaped like trained ones: He-scaled convolutions,
positive BatchNorm variances, means of either sign, and a moving-average
scale factor that is not 1 (Caffe stores running sums divided by it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from caffessd import caffe_pb2, protoio
from caffessd.net import Net


def parse_net(text: str) -> caffe_pb2.NetParameter:
    return protoio.parse_prototxt_text(text, caffe_pb2.NetParameter())


def random_weights(net: Net, seed: int = 0, scale_factor: Optional[float] = None) -> Dict[str, List[np.ndarray]]:
    """Random blobs for every layer of `net`. `scale_factor` is BatchNorm's blob 2
    (None: a random one in [0.5, 5) per layer; 0 makes Caffe zero the statistics)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for info in net.walk(with_weights=False):
        shapes = info.param_shapes
        if not shapes:
            continue
        if info.type == "BatchNorm":
            channels = shapes[0][0]
            factor = rng.uniform(0.5, 5.0) if scale_factor is None else scale_factor
            stored_as = factor if factor else 1.0
            mean = rng.normal(0.0, 0.5, channels) * stored_as
            variance = rng.uniform(0.2, 3.0, channels) * stored_as
            blobs = [mean, variance, np.array([factor])]
        elif info.type == "Scale":
            blobs = [rng.uniform(0.5, 1.5, s) * rng.choice([-1.0, 1.0], s) if i == 0 else rng.normal(0, 0.3, s)
                     for i, s in enumerate(shapes)]
        elif info.type in ("Convolution", "Deconvolution", "InnerProduct"):
            weight = shapes[0]
            fan_in = int(np.prod(weight[1:])) if info.type != "Deconvolution" else int(np.prod(weight[2:])) * weight[0]
            blobs = [rng.normal(0.0, np.sqrt(1.0 / max(fan_in, 1)), weight)]
            blobs += [rng.normal(0.0, 0.1, s) for s in shapes[1:]]
        else:
            blobs = [rng.uniform(0.5, 1.5, s) for s in shapes]
        weights[info.name] = [np.asarray(b, dtype=np.float32).reshape(s) for b, s in zip(blobs, shapes)]
    return weights


def net_with_random_weights(text_or_param, seed: int = 0, scale_factor: Optional[float] = None) -> Net:
    param = parse_net(text_or_param) if isinstance(text_or_param, str) else text_or_param
    net = Net(param)
    net.weights = random_weights(net, seed, scale_factor)
    return net


def save_net(net: Net, folder: Path, stem: str = "net"):
    """Write `net` as <stem>.prototxt and <stem>.caffemodel; return both paths."""
    prototxt, caffemodel = Path(folder) / f"{stem}.prototxt", Path(folder) / f"{stem}.caffemodel"
    protoio.write_prototxt(net.param, prototxt)
    protoio.write_caffemodel(protoio.caffemodel_from(net.param, net.weights), caffemodel)
    return prototxt, caffemodel


# ---------------------------------------------------------------- prototxt pieces

def header(shape=(1, 3, 12, 12), name: str = "data") -> str:
    dims = "".join(f" dim: {d}" for d in shape)
    return f'name: "t" input: "{name}" input_shape {{{dims} }}\n'


def conv(name, bottom, top, num_output=8, kernel=3, pad=1, stride=1, group=1, bias=True, kind="Convolution") -> str:
    return (f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{top}" '
            f'convolution_param {{ num_output: {num_output} kernel_size: {kernel} pad: {pad} stride: {stride} '
            f'group: {group} bias_term: {"true" if bias else "false"} }} }}\n')


def inner_product(name, bottom, top, num_output=10, bias=True, transpose=False) -> str:
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" '
            f'inner_product_param {{ num_output: {num_output} bias_term: {"true" if bias else "false"} '
            f'transpose: {"true" if transpose else "false"} }} }}\n')


def batchnorm(name, bottom, top, eps=None, use_global_stats=None) -> str:
    params = []
    if eps is not None:
        params.append(f"eps: {eps}")
    if use_global_stats is not None:
        params.append(f"use_global_stats: {'true' if use_global_stats else 'false'}")
    body = f" batch_norm_param {{ {' '.join(params)} }}" if params else ""
    return f'layer {{ name: "{name}" type: "BatchNorm" bottom: "{bottom}" top: "{top}"{body} }}\n'


def scale(name, bottom, top, bias=True, axis=None, num_axes=None) -> str:
    params = [f"bias_term: {'true' if bias else 'false'}"]
    if axis is not None:
        params.append(f"axis: {axis}")
    if num_axes is not None:
        params.append(f"num_axes: {num_axes}")
    return (f'layer {{ name: "{name}" type: "Scale" bottom: "{bottom}" top: "{top}" '
            f'scale_param {{ {" ".join(params)} }} }}\n')


def relu(name, bottom, top) -> str:
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{bottom}" top: "{top}" }}\n'


def layer(name, kind, bottoms, tops, extra="") -> str:
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{kind}" {b} {t} {extra} }}\n'
