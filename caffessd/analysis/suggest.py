"""Priors fitted to a dataset's boxes, in gen-model's terms.

Two methods, both kept to what gen-model can write, so the flags they print
rebuild exactly the priors that were scored:

- scale-rule: the SSD paper's rule as gen-model applies it (layer i of n gets
  scale s_i = min_scale + (max_scale - min_scale) * i / (n - 1) of the
  shorter input side, its max size the next scale, the first layer no max
  size), with min_scale, max_scale, the aspect ratios and optionally a max
  size for the first layer (its extra square between two sizes) chosen to
  maximise the share of boxes some prior reaches overlap_threshold with: a
  coarse grid, then finer ones around the best. Only settings whose priors
  are no smaller than their layer's step are considered (respects_steps).
- kmeans: k-means of the boxes' (width, height) with 1 - IoU as the distance
  (YOLOv2's anchor clustering), one cluster per prior layer, smallest on the
  shallowest layer: min size the cluster's square side, max size the next
  cluster's, plus the cluster's aspect ratio when it is not square; a layer's
  size is raised to its step where the cluster is smaller (see respects_steps).

Scores come from caffessd.analysis.fastiou on a sample of the boxes; the
command then replays the full matcher on every box for the suggestion it
reports, and for the net's own priors, so that both figures are exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from caffessd import caffe_pb2
from caffessd.analysis.fastiou import best_iou, grid_of
from caffessd.analysis.netpriors import NetPriors
from caffessd.errors import CaffessdError
from caffessd.generators.config import SSDConfig
from caffessd.generators.priors import clean, prior_specs, tf_scales
from caffessd.priorbox import cell_box_sizes

METHODS = ("scale-rule", "kmeans")
# Aspect-ratio sets tried by the scale rule (None: gen-model's default, 2 on the first layer, then 2 and 3).
ASPECT_SETS: Tuple[Optional[Tuple[float, ...]], ...] = (None, (2.0,), (2.0, 3.0), (2.0, 3.0, 4.0))


@dataclass
class Suggestion:
    method: str
    summary: str                         # which method and its fitted values, in words
    params: List[caffe_pb2.PriorBoxParameter]
    flags: List[str]                     # gen-model options that write these priors
    estimate: float                      # share of sampled boxes reaching the threshold (fast estimate)
    per_layer: List[Tuple[List[float], List[float], List[float]]] = field(default_factory=list)


# ---------------------------------------------------------------- candidates

def _config(priors: NetPriors, **options) -> SSDConfig:
    height, width = priors.input_hw
    clip = all(layer.param.clip for layer in priors.layers)
    steps = any(layer.param.HasField("step") or layer.param.HasField("step_h") for layer in priors.layers)
    return SSDConfig(input_width=width, input_height=height, clip=clip, explicit_steps=steps, **options)


def _params(priors: NetPriors, config: SSDConfig) -> List[caffe_pb2.PriorBoxParameter]:
    """The net's PriorBox parameters with gen-model's sizes and ratios for `config`."""
    specs = prior_specs(config, [layer.feature_hw for layer in priors.layers])
    params = []
    for layer, spec in zip(priors.layers, specs):
        param = caffe_pb2.PriorBoxParameter()
        param.CopyFrom(layer.param)
        del param.min_size[:], param.max_size[:], param.aspect_ratio[:]
        param.min_size.extend(spec.min_sizes)
        param.max_size.extend(spec.max_sizes)
        param.aspect_ratio.extend(spec.aspect_ratios)
        params.append(param)
    return params


def _score(priors: NetPriors, params, boxes: np.ndarray, threshold: float, centres=None) -> Tuple[float, float]:
    centres = centres or [None] * len(params)
    grids = [grid_of(p, layer.feature_hw, layer.image_hw, c) for p, layer, c in zip(params, priors.layers, centres)]
    best, _ = best_iou(boxes, grids)
    return float((best >= threshold - 1e-6).mean()), float(best.mean())


def _common_flags(config: SSDConfig) -> List[str]:
    flags = []
    if config.clip:
        flags.append("--clip")
    if config.explicit_steps:
        flags.append("--explicit-steps")
    return flags


def _ratio_flag(ratios) -> List[str]:
    if ratios is None:
        return []
    if isinstance(ratios[0], (list, tuple)):
        return ["--aspect-ratios", ";".join(",".join(f"{r:g}" for r in group) for group in ratios)]
    return ["--aspect-ratios", ",".join(f"{r:g}" for r in ratios)]


def _per_layer(params) -> list:
    return [(list(p.min_size), list(p.max_size), list(p.aspect_ratio)) for p in params]


# ---------------------------------------------------------------- the scale rule

def respects_steps(priors: NetPriors, params) -> bool:
    """No layer of more than one cell has a prior smaller than its step.

    A prior smaller than the spacing of its grid leaves gaps between cells
    that none of the layer's priors can match, and asks a coarse layer to
    find objects far smaller than its cells: fitted without this rule, the
    search put every layer's priors at the size of small objects and, on the
    generated shapes of scripts/fit_priors_shapes.py, raised coverage from
    35% to 47% but lowered held-out mAP (0.853 against 0.868 on 1,000 images).
    gen-model's defaults keep to it."""
    for param, layer in zip(params, priors.layers):
        if tuple(layer.feature_hw) != (1, 1) and min(param.min_size) < min(layer.step()) * (1 - 1e-6):
            return False
    return True


def _rule_sizes(priors: NetPriors, lo: float, hi: float, first: float):
    """gen-model's min and max sizes for scales lo..hi, with max size `first` (a scale) on the first layer."""
    ref = min(priors.input_hw)
    scales = tf_scales(lo, hi, len(priors.layers))
    mins = [clean(scale * ref) for scale in scales[:-1]]
    maxs = [clean(first * ref)] + [clean(scales[i + 1] * ref) for i in range(1, len(mins))]
    return mins, maxs


def fit_scale_rule(priors: NetPriors, boxes: np.ndarray, threshold: float) -> Suggestion:
    """min_scale, max_scale, the aspect ratios and (optionally) a max size on the
    first layer, maximising the sampled coverage among settings that respect
    the layers' steps."""
    cache = {}
    centres = [grid_of(layer.param, layer.feature_hw, layer.image_hw) for layer in priors.layers]

    def evaluate(lo: float, hi: float, ratios, first=None):
        key = (round(lo, 4), round(hi, 4), ratios, None if first is None else round(first, 4))
        if key not in cache:
            aspect = None if ratios is None else [list(ratios)]
            if first is None:
                config = _config(priors, min_scale=key[0], max_scale=key[1], aspect_ratios=aspect)
            else:
                mins, maxs = _rule_sizes(priors, key[0], key[1], key[3])
                config = _config(priors, min_sizes=mins, max_sizes=maxs, aspect_ratios=aspect)
            params = _params(priors, config)
            if not respects_steps(priors, params):
                cache[key] = None
            else:
                coverage, mean = _score(priors, params, boxes, threshold, centres)
                boxes_per_cell = sum(len(cell_box_sizes(p)) for p in params)
                cache[key] = ((round(coverage, 3), -boxes_per_cell, mean), params, config, key)
        return cache[key]

    def search(candidates):
        best = None
        for lo, hi, ratios, first in candidates:
            # gen-model's last layer reaches up to scale 1.0: its own scale must stay below that
            lo, hi = round(float(lo), 4), round(min(float(hi), 0.99), 4)
            if lo <= 0 or hi <= lo or (first is not None and first <= lo):
                continue
            result = evaluate(lo, hi, ratios, first)
            if result is not None and (best is None or result[0] > best[0]):
                best = result
        return best

    lows = np.arange(0.02, 0.61, 0.04)
    best = search([(lo, hi, None, None) for lo in lows for hi in list(np.arange(lo + 0.1, 1.0, 0.1)) + [0.99]])
    if best is None:
        raise CaffessdError("no scale-rule setting keeps every layer's priors at least as large as its step")
    lo0, hi0 = best[3][0], best[3][1]
    fine = [(lo, hi) for lo in np.arange(lo0 - 0.03, lo0 + 0.031, 0.01) for hi in np.arange(hi0 - 0.1, hi0 + 0.101, 0.05)]
    for ratios in ASPECT_SETS:
        found = search([(lo, hi, ratios, None) for lo, hi in fine])
        if found is not None and found[0] > best[0]:
            best = found
    lo0, hi0, ratios0 = best[3][0], best[3][1], best[3][2]
    # A smaller min_scale may need the largest max_scale to keep deeper layers at their steps.
    found = search([(lo, hi, ratios0, first) for lo in np.arange(lo0 - 0.03, lo0 + 0.031, 0.01)
                    for first in np.arange(lo + 0.04, lo + 0.5, 0.02) for hi in {hi0, 0.99}])
    if found is not None and found[0] > best[0]:
        best = found
    lo0, _, ratios0, first0 = best[3]
    found = search([(lo0, hi, ratios0, first0) for hi in np.arange(lo0 + 0.05, 1.0, 0.03)])
    if found is not None and found[0] > best[0]:
        best = found
    score, params, config, (lo, hi, ratios, first) = best
    if first is None:
        flags = ["--min-scale", f"{lo:g}", "--max-scale", f"{hi:g}"]
    else:
        flags = ["--min-sizes", ",".join(f"{v:g}" for v in config.min_sizes),
                 "--max-sizes", ",".join(f"{v:g}" for v in config.max_sizes)]
    flags += [*_ratio_flag(ratios), *_common_flags(config)]
    ratio_words = "2 then 2,3 (default)" if ratios is None else ",".join(f"{r:g}" for r in ratios)
    extra = "" if first is None else f", a max size of {config.max_sizes[0]:g} px on the first layer"
    words = f"the SSD scale rule fitted to the data: min_scale {lo:g}, max_scale {hi:g}{extra}, aspect ratios {ratio_words}"
    return Suggestion("scale-rule", words, params, flags, score[0], _per_layer(params))


# ---------------------------------------------------------------- k-means

def iou_wh(shapes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """IoU of boxes sharing a centre: (N, K)."""
    inter = (np.minimum(shapes[:, None, 0], centroids[None, :, 0])
             * np.minimum(shapes[:, None, 1], centroids[None, :, 1]))
    union = shapes[:, None, 0] * shapes[:, None, 1] + centroids[None, :, 0] * centroids[None, :, 1] - inter
    return inter / union


def kmeans_iou(shapes: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """k centroids (width, height) of `shapes` under the 1 - IoU distance (k-means++ start)."""
    rng = np.random.default_rng(seed)
    if len(shapes) < k:
        raise CaffessdError(f"k-means needs at least {k} boxes (one per prior layer), the dataset has {len(shapes)}")
    centroids = [shapes[rng.integers(len(shapes))]]
    for _ in range(1, k):
        distance = 1 - iou_wh(shapes, np.asarray(centroids)).max(axis=1)
        weights = distance ** 2
        total = weights.sum()
        pick = rng.choice(len(shapes), p=weights / total) if total > 0 else rng.integers(len(shapes))
        centroids.append(shapes[pick])
    centroids = np.asarray(centroids, np.float64)
    for _ in range(iterations):
        assign = iou_wh(shapes, centroids).argmax(axis=1)
        moved = np.array([shapes[assign == j].mean(axis=0) if (assign == j).any() else centroids[j] for j in range(k)])
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return centroids[np.argsort(centroids[:, 0] * centroids[:, 1])]


def fit_kmeans(priors: NetPriors, boxes: np.ndarray, threshold: float, seed: int = 0) -> Suggestion:
    height, width = priors.input_hw
    shapes = np.stack([(boxes[:, 2] - boxes[:, 0]) * width, (boxes[:, 3] - boxes[:, 1]) * height], axis=1)
    centroids = kmeans_iou(shapes.astype(np.float64), len(priors.layers), seed)
    sides = [max(clean(float(np.sqrt(w * h))), 1.0) for w, h in centroids]
    for i, layer in enumerate(priors.layers):
        if tuple(layer.feature_hw) != (1, 1):    # respects_steps: never smaller than the layer's step
            sides[i] = max(sides[i], clean(min(layer.step())))
        if i:                                    # strictly increasing, as PriorBox's max > min needs
            sides[i] = max(sides[i], clean(sides[i - 1] + 1))
    top = float(min(width, height))
    max_sizes = [clean(max(min(sides[i + 1] if i + 1 < len(sides) else sides[i] * 1.5, top), sides[i] + 1))
                 for i in range(len(sides))]
    ratios = []
    for w, h in centroids:
        r = max(w / h, h / w)
        extra = round(r * 2) / 2
        ratios.append([2.0] if extra < 1.5 or extra == 2.0 else [2.0, float(extra)])
    config = _config(priors, min_sizes=sides, max_sizes=max_sizes, aspect_ratios=ratios)
    params = _params(priors, config)
    coverage, _ = _score(priors, params, boxes, threshold)
    flags = ["--min-sizes", ",".join(f"{s:g}" for s in sides), "--max-sizes", ",".join(f"{s:g}" for s in max_sizes),
             *_ratio_flag(ratios), *_common_flags(config)]
    words = (f"k-means of the box shapes with IoU distance, {len(sides)} clusters: "
             + ", ".join(f"{w:.0f}x{h:.0f}" for w, h in centroids) + " px")
    return Suggestion("kmeans", words, params, flags, coverage, _per_layer(params))


def suggest(priors: NetPriors, boxes: np.ndarray, methods: Sequence[str] = METHODS, sample: int = 3000,
            seed: int = 0) -> List[Suggestion]:
    """Suggestions by each method for the normalised `boxes` (a sample of them is scored)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        raise CaffessdError("no boxes to fit priors to")
    if len(boxes) > sample:
        boxes = boxes[np.random.default_rng(seed).choice(len(boxes), sample, replace=False)]
    threshold = float(priors.rule.overlap_threshold)
    found = []
    for method in methods:
        if method not in METHODS:
            raise CaffessdError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
        found.append(fit_scale_rule(priors, boxes, threshold) if method == "scale-rule"
                     else fit_kmeans(priors, boxes, threshold, seed))
    return found
