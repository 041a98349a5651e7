"""Default-box (prior) specifications for each head.

Sizes follow the TF Object Detection API's SSD anchor generator: with n heads,
scale_i = min_scale + (max_scale - min_scale) * i / (n - 1), and 1.0 after the
last. Head i gets min size scale_i and max size scale_{i+1} (Caffe's extra
square of side sqrt(min*max) is TF's interpolated scale), in pixels of the
shorter input side so boxes stay square in pixels as TF makes them. The first
head has no max size and aspect ratio 2 only (3 boxes per cell, as in the
published nets, whose converted weights expect it), or with
`tf_lowest_layer_anchors` TF's exact lowest-layer boxes. A net trained from
scratch has no weights to fit: its first head gets the 6 boxes of every other
head (aspect ratios 2 and 3, max size the next scale), as in the SSD paper and
torchvision's SSD/SSDlite (docs/training-recipe.md measures the difference).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

from caffessd.errors import CaffessdError
from caffessd.generators.config import TF_LOWEST_LAYER_SMALL_SCALE, PriorSpec, SSDConfig

DEFAULT_FIRST_ASPECT_RATIOS = [2.0]
DEFAULT_ASPECT_RATIOS = [2.0, 3.0]


def tf_scales(min_scale: float, max_scale: float, count: int) -> List[float]:
    """The `count` layer scales of TF's SSD anchor generator, plus 1.0 after them."""
    if count == 1:
        return [min_scale, 1.0]
    return [min_scale + (max_scale - min_scale) * i / (count - 1) for i in range(count)] + [1.0]


def clean(value: float) -> float:
    """Drop float noise (0.35 * 300 = 105.00000000000001) so the text reads naturally."""
    return round(value, 6)


def prior_specs(config: SSDConfig, feature_sizes: Sequence[Tuple[int, int]]) -> List[PriorSpec]:
    """One PriorSpec per head (`feature_sizes`: the (height, width) of each head's map)."""
    count = len(feature_sizes)
    if config.prior_specs is not None:
        if len(config.prior_specs) != count:
            raise CaffessdError(f"{len(config.prior_specs)} prior specs for {count} feature layers")
        specs = [_copy(spec) for spec in config.prior_specs]
    else:
        min_sizes, max_sizes = _sizes(config, count)
        ratios = _aspect_ratios(config, count)
        specs = [PriorSpec(min_sizes=[lo], max_sizes=[] if hi is None else [hi], aspect_ratios=ar,
                           clip=config.clip)
                 for lo, hi, ar in zip(min_sizes, max_sizes, ratios)]
        if config.tf_lowest_layer_anchors:
            first = specs[0]
            first.max_sizes = []
            first.small_square = clean(TF_LOWEST_LAYER_SMALL_SCALE * config.ref_size)
    if config.explicit_steps:
        for spec, (height, width) in zip(specs, feature_sizes):
            spec.steps = (clean(config.input_height / height), clean(config.input_width / width))
    for i, spec in enumerate(specs):
        spec.validate(f"priors of feature layer {i + 1}")
    return specs


def prior_count(specs: Sequence[PriorSpec], feature_sizes: Sequence[Tuple[int, int]]) -> int:
    """Total number of default boxes: sum over heads of cells x boxes per cell."""
    return sum(h * w * spec.boxes_per_cell() for spec, (h, w) in zip(specs, feature_sizes))


def _full_first_head(config: SSDConfig) -> bool:
    """Whether the first head gets the 6 default boxes of the others (a max size and ratio 3)
    instead of the published 3: from scratch, unless TF's exact lowest-layer boxes are asked for."""
    return config.from_scratch and not config.tf_lowest_layer_anchors


def _sizes(config: SSDConfig, count: int):
    if config.max_sizes is not None and len(config.max_sizes) != count:
        raise CaffessdError(f"--max-sizes has {len(config.max_sizes)} values for {count} feature layers")
    if config.min_sizes is not None:
        if len(config.min_sizes) != count:
            raise CaffessdError(f"--min-sizes has {len(config.min_sizes)} values for {count} feature layers")
        min_sizes = [clean(s) for s in config.min_sizes]
        max_sizes = [None] * count
    else:
        scales = tf_scales(config.min_scale, config.max_scale, count)
        ref = config.ref_size
        min_sizes = [clean(s * ref) for s in scales[:count]]
        # Head i reaches up to the next scale; the published first head has no max size.
        max_sizes = [clean(scales[i + 1] * ref) for i in range(count)]
        if not _full_first_head(config):
            max_sizes[0] = None
    if config.max_sizes is not None:
        # Explicit max sizes apply over either kind of min sizes ('-' keeps a head without one).
        max_sizes = [None if s is None else clean(s) for s in config.max_sizes]
    return min_sizes, max_sizes


def _aspect_ratios(config: SSDConfig, count: int) -> List[List[float]]:
    given = config.aspect_ratios
    if given is None:
        first = DEFAULT_ASPECT_RATIOS if _full_first_head(config) else DEFAULT_FIRST_ASPECT_RATIOS
        return [list(first)] + [list(DEFAULT_ASPECT_RATIOS) for _ in range(count - 1)]
    if len(given) == 1:
        return [list(given[0]) for _ in range(count)]
    if len(given) != count:
        raise CaffessdError(f"--aspect-ratios has {len(given)} per-layer lists for {count} feature layers")
    return [list(ar) for ar in given]


def _copy(spec: PriorSpec) -> PriorSpec:
    from dataclasses import replace

    return replace(spec, min_sizes=list(spec.min_sizes), max_sizes=list(spec.max_sizes),
                   aspect_ratios=list(spec.aspect_ratios))
