"""Which BatchNorm layers run together with the Scale layer after them.

Caffe's nets pair every BatchNorm (normalise, no affine part) with a Scale
layer (per-channel factor and bias). Run as written that is the normalisation
plus a multiply and an add over the whole tensor, each with its own backward
pass; run together it is one fused batch-norm kernel with the Scale's blobs as
its scale and offset, which computes exactly Caffe's

    y = (x - mean) / sqrt(var + eps) * factor + bias

(batch_norm_layer.cpp, then scale_layer.cpp) in one pass forward and one
backward, and keeps one saved tensor per pair instead of three.

A pair is fused only when nothing but the Scale reads the BatchNorm's output
(in-place pairs, as gen-model and the published nets write them, always
qualify), and the Scale is the common per-channel form: one bottom, axis 1,
a factor blob of one value per channel.
"""
from __future__ import annotations

from typing import Dict, List


def _fusable_scale(scale, batch_norm, blob: str) -> bool:
    layer = scale.layer
    if list(layer.bottom) != [blob] or len(layer.top) != 1 or not scale.param_shapes:
        return False
    shape = batch_norm.input_shapes[0]
    rank = len(shape)
    param = layer.scale_param
    axis = param.axis + rank if param.axis < 0 else param.axis
    if axis != 1 or rank < 2 or (param.HasField("num_axes") and param.num_axes != 1):
        return False
    channels = shape[1]
    return all(tuple(s) == (channels,) for s in scale.param_shapes)


def plan_batch_norm_scale(infos: List) -> Dict[str, object]:
    """BatchNorm layer name -> the LayerInfo of the Scale layer it runs with."""
    pairs = {}
    for k, info in enumerate(infos):
        if info.type != "BatchNorm" or len(info.layer.top) != 1 or len(info.layer.bottom) != 1:
            continue
        blob = info.layer.top[0]
        partner = None
        for later in infos[k + 1:]:
            reads = blob in later.layer.bottom
            if partner is None:
                if not reads:
                    if blob in later.layer.top:
                        break  # overwritten before anyone read it
                    continue
                if later.type != "Scale" or not _fusable_scale(later, info, blob):
                    break
                partner = later
                if blob in later.layer.top:
                    break  # in place: every later reader sees the Scale's output
            else:
                if reads:
                    partner = None  # someone else needs the plain normalised blob
                    break
                if blob in later.layer.top:
                    break
        if partner is not None:
            pairs[info.name] = partner
    return pairs
