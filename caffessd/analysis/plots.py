"""fit-priors' pictures (matplotlib, the `eval` extra): the best IoU of the
objects by their size, and the objects' shapes over the priors' shapes.
Each is returned as PNG bytes; the command writes them atomically."""
from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np

from caffessd.analysis.coverage import Coverage
from caffessd.analysis.summary import object_areas, share_buckets
from caffessd.errors import CaffessdError
from caffessd.priorbox import cell_box_sizes

MAX_POINTS = 20000


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CaffessdError("fit-priors pictures need matplotlib: pip install 'caffessd[eval]' "
                            "(or give --no-plots)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig, plt) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def iou_histograms(coverage: Coverage, title: str = "") -> bytes:
    """One histogram of best IoU per image-share bucket, the threshold marked."""
    plt = _pyplot()
    _, share = object_areas(coverage)
    buckets = [(name, (share >= lo) & (share < hi)) for name, lo, hi in share_buckets()]
    buckets = [(name, mask) for name, mask in buckets if mask.any()] or [("all", np.ones(len(share), bool))]
    fig, axes = plt.subplots(1, len(buckets), figsize=(3.2 * len(buckets), 3.2), squeeze=False, sharey=False)
    bins = np.linspace(0, 1, 21)
    for axis, (name, mask) in zip(axes[0], buckets):
        ious = coverage.best_iou[mask]
        axis.hist(ious, bins=bins, color="tab:blue", edgecolor="white")
        axis.axvline(coverage.threshold, color="tab:red", linestyle="--", linewidth=1)
        matched = (ious >= coverage.threshold).mean() if len(ious) else 0
        axis.set_title(f"{name} of the image\n{len(ious)} objects, {100 * matched:.0f}% >= {coverage.threshold:g}",
                       fontsize=9)
        axis.set_xlabel("best IoU with a prior")
    axes[0][0].set_ylabel("objects")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig, plt)


def shapes_over_priors(coverage: Coverage, suggested: Optional[Sequence] = None, title: str = "") -> bytes:
    """Objects' width x height in net-input pixels (unmatched in red) over each
    layer's prior shapes (and, given, the suggested ones)."""
    plt = _pyplot()
    height, width = coverage.priors.input_hw
    _, boxes, _ = coverage.truth.arrays()
    w = (boxes[:, 2] - boxes[:, 0]) * width
    h = (boxes[:, 3] - boxes[:, 1]) * height
    keep = np.arange(len(w))
    if len(keep) > MAX_POINTS:
        keep = np.random.default_rng(0).choice(len(keep), MAX_POINTS, replace=False)
    fig, axis = plt.subplots(figsize=(7, 6))
    good = keep[coverage.strong[keep]]
    bad = keep[~coverage.strong[keep]]
    axis.scatter(w[good], h[good], s=6, alpha=0.35, color="tab:blue", label="objects matched", linewidths=0)
    axis.scatter(w[bad], h[bad], s=10, alpha=0.6, color="tab:red", marker="x", label="objects not matched",
                 linewidths=0.8)
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(1, len(coverage.priors.layers))))
    for colour, layer in zip(colours, coverage.priors.layers):
        shapes = np.asarray(layer.shapes)
        axis.scatter(shapes[:, 0], shapes[:, 1], s=90, facecolors="none", edgecolors=[colour], linewidths=1.6,
                     label=f"{layer.name} (step {layer.step()[1]:g})")
    if suggested:
        shapes = np.asarray([s for param in suggested for s in cell_box_sizes(param)])
        axis.scatter(shapes[:, 0], shapes[:, 1], s=60, marker="s", facecolors="none", edgecolors="tab:orange",
                     linewidths=1.4, label="suggested priors")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("width (net input px)")
    axis.set_ylabel("height (net input px)")
    axis.set_title(title or "object shapes over prior shapes", fontsize=10)
    axis.legend(fontsize=7, loc="upper left")
    axis.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    return _png(fig, plt)
