"""What a person reads after `caffessd eval`: a table on the terminal,
report.json, and PR-curve PNGs (per class, or per WIDER setting, with several
models overlaid). The report folder is built under a temporary name beside
its target and renamed into place, so it is never half-written."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from caffessd.errors import FormatError
from caffessd.eval.runner import EvalResult

PLOTS_HINT = "PR curve plots need matplotlib: pip install 'caffessd[eval]'"


def table(results: Sequence[EvalResult]) -> str:
    """Rows: headline numbers, then AP per class; one column per model."""
    names = [r.model for r in results]
    width = max([12] + [len(n) for n in names])
    label_width = max([10] + [len(k) for r in results for k in list(r.summary) + list(r.per_class)]) + 2
    lines = [" " * label_width + "".join(f"{n:>{width + 2}}" for n in names)]

    def row(label, values):
        cells = "".join(f"{v:>{width + 2}.4f}" if isinstance(v, float) else f"{v:>{width + 2}}" for v in values)
        lines.append(f"{label:<{label_width}}{cells}")

    for key in results[0].summary:
        row(key, [r.summary.get(key, "-") for r in results])
    for key in results[0].per_class:
        row(f"  {key}", [r.per_class.get(key, {}).get("AP", "-") for r in results])
    if any(r.engine not in ("", "onnxruntime") for r in results):
        row("engine", [r.engine or "-" for r in results])
    row("images", [str(r.images) for r in results])
    row("images/s", [f"{r.images_per_second:.1f}" for r in results])
    return "\n".join(lines)


def plot_curves(results: Sequence[EvalResult], folder: Path) -> List[str]:
    """One PNG per class (or WIDER setting), every model's curve on it.
    Returns the file names written; raises ImportError without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    keys = []
    for r in results:
        keys += [k for k in r.curves if k not in keys]
    for key in keys:
        figure, axes = plt.subplots(figsize=(5, 4.2), dpi=100)
        for r in results:
            curve = r.curves.get(key)
            if not curve:
                continue
            ap = r.summary.get(key) if r.metric == "wider" else r.per_class.get(key, {}).get("AP")
            label = r.model + (f" (AP {ap:.3f})" if isinstance(ap, float) else "")
            axes.plot(curve["recall"], curve["precision"], label=label)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_title(f"{key} ({results[0].metric})")
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=8)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
        name = f"pr_{safe}.png"
        figure.tight_layout()
        figure.savefig(folder / name)
        plt.close(figure)
        written.append(name)
    return written


def write_report(results: Sequence[EvalResult], out_dir, extra_files_from: Optional[Path] = None,
                 settings: Optional[dict] = None) -> dict:
    """Write out_dir/report.json and the plots, atomically: everything goes to
    a temporary folder beside out_dir, which then replaces it. `extra_files_from`:
    a work folder (COCO results JSON, WIDER result folders) moved in too."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if extra_files_from is not None and Path(extra_files_from).exists():
            for item in Path(extra_files_from).iterdir():
                shutil.move(str(item), staging / item.name)
        try:
            plots = plot_curves(results, staging)
            note = None
        except ImportError:
            plots, note = [], PLOTS_HINT
        report = {"settings": settings or {}, "results": [r.to_dict() for r in results],
                  "curves": {r.model: r.curves for r in results}, "plots": plots}
        if note:
            report["plots_note"] = note
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


REPORT_FILE = "report.json"


def require_report_folder(out_dir) -> None:
    """The report folder is replaced as a whole, so only a folder that holds
    an earlier report (or nothing) may be: any other folder (a dataset, a
    home directory given as --out by mistake) is refused, never removed."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    names = sorted(p.name for p in out_dir.iterdir())
    if names and REPORT_FILE not in names:
        raise FormatError(out_dir, f"--out holds {names[0]!r}" + (f" and {len(names) - 1} more" if len(names) > 1
                                   else "") + f" but no {REPORT_FILE}: eval replaces its report folder as a whole, "
                                              f"so give a new or empty folder, or an earlier report's")


def _replace_dir(staging: Path, target: Path) -> None:
    if target.exists():
        require_report_folder(target)  # again: it may have changed while the models ran
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
