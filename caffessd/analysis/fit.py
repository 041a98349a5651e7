"""fit-priors as one call: a net and a dataset in, coverage (and suggested
priors with their exact coverage) out, plus the report files.

    from caffessd.analysis.fit import fit_priors
    result = fit_priors("train.prototxt", open_dataset("VOCdevkit", "voc", "trainval"), suggest=True)
    print(result.coverage.share, result.best.flags)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from caffessd.analysis import plots as pictures, summary
from caffessd.analysis.coverage import Coverage, replay
from caffessd.analysis.groundtruth import GroundTruth, collect
from caffessd.analysis.netpriors import NetPriors, load_net_priors
from caffessd.analysis.suggest import METHODS, Suggestion, suggest as suggest_priors
from caffessd.errors import CaffessdError
from caffessd.util.files import atomic_write_many

REPORT = "coverage.json"
HISTOGRAMS = "best_iou_by_size.png"
SCATTER = "shapes_vs_priors.png"


@dataclass
class FitResult:
    priors: NetPriors
    truth: GroundTruth
    coverage: Coverage
    suggestions: List[Tuple[Suggestion, Coverage]] = field(default_factory=list)

    @property
    def best(self) -> Optional[Suggestion]:
        """The suggestion with the highest (exact) coverage; the scale rule on a tie."""
        if not self.suggestions:
            return None
        return max(self.suggestions, key=lambda pair: pair[1].matched)[0]

    def best_coverage(self) -> Optional[Coverage]:
        return next((c for s, c in self.suggestions if s is self.best), None)

    def report(self) -> dict:
        data = summary.report_dict(self.coverage)
        if self.suggestions:
            data["suggestions"] = [
                {"method": s.method, "summary": s.summary, "gen_model_flags": s.flags,
                 "estimated_share": round(s.estimate, 6), "share": round(c.share, 6), "matched": c.matched,
                 "chosen": s is self.best, "layers": summary.layer_table(c),
                 "sizes": summary.size_tables(c)}
                for s, c in self.suggestions]
        return data


def fit_priors(net, dataset, input_size=None, suggest: bool = False, methods: Sequence[str] = METHODS,
               limit: Optional[int] = None, progress: bool = True) -> FitResult:
    """Replay the net's matching over the dataset; with `suggest`, fit priors by each method."""
    priors = load_net_priors(net, input_size)
    truth = collect(dataset, priors.input_hw, priors.resize_mode, priors.use_difficult_gt, limit, progress)
    if not len(truth):
        raise CaffessdError(f"the dataset has no usable boxes ({len(truth.image_names)} images read, "
                            f"{truth.invalid} invalid boxes)")
    coverage = replay(truth, priors, progress)
    result = FitResult(priors, truth, coverage)
    if suggest:
        _, boxes, _ = truth.arrays()
        for found in suggest_priors(priors, boxes, methods):
            result.suggestions.append((found, replay(truth, priors.with_params(found.params))))
    return result


def suggestion_lines(result: FitResult) -> List[str]:
    best = result.best
    if best is None:
        return []
    best_cover = result.best_coverage()
    lines = ["", f"suggested priors ({best.summary}):",
             f"  coverage {100 * result.coverage.share:.1f}% -> {100 * best_cover.share:.1f}% "
             f"({result.coverage.matched} -> {best_cover.matched} of {result.coverage.objects} objects)"]
    for other, cover in result.suggestions:
        if other is not best:
            lines.append(f"  ({other.method} reached {100 * cover.share:.1f}%)")
    lines.append("  gen-model flags: " + " ".join(best.flags))
    for layer, (mins, maxs, ratios) in zip(result.priors.layers, best.per_layer):
        lines.append(f"  {layer.name}: min_size {','.join(f'{v:g}' for v in mins)}  max_size "
                     f"{','.join(f'{v:g}' for v in maxs) or '-'}  aspect_ratio {','.join(f'{v:g}' for v in ratios)}")
    return lines


def text_lines(result: FitResult) -> List[str]:
    return summary.text_lines(summary.report_dict(result.coverage)) + suggestion_lines(result)


def write_outputs(result: FitResult, out_dir, plots: bool = True) -> List[Path]:
    """coverage.json and the two pictures in `out_dir` (each written atomically)."""
    out = Path(out_dir)
    items = [(out / REPORT, json.dumps(result.report(), indent=1) + "\n")]
    if plots:
        best = result.best
        items.append((out / HISTOGRAMS, pictures.iou_histograms(result.coverage, f"{Path(result.priors.source).name}: "
                                                                 f"best IoU of each object with any prior")))
        items.append((out / SCATTER, pictures.shapes_over_priors(result.coverage, best.params if best else None)))
    return atomic_write_many(items)
