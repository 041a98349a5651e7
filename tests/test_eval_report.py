"""The eval report: table, report.json, overlaid PR plots, the hint when
matplotlib is missing, and the folder replaced whole."""
import builtins
import json

from caffessd.eval.report import PLOTS_HINT, table, write_report
from caffessd.eval.runner import EvalResult


def results():
    curve = {"precision": [1.0, 0.5, 0.67], "recall": [0.33, 0.33, 0.67]}
    return [EvalResult("a", "a.onnx", "voc07", 10, 2.0, {"mAP": 0.5}, {"cat": {"AP": 0.5}}, {"cat": curve}),
            EvalResult("b", "b.onnx", "voc07", 10, 1.0, {"mAP": 0.25}, {"cat": {"AP": 0.25}}, {"cat": curve})]


def test_table_and_plots(tmp_path):
    text = table(results())
    assert text.splitlines()[1].split() == ["mAP", "0.5000", "0.2500"]
    assert text.splitlines()[-1].split() == ["images/s", "5.0", "10.0"]
    report = write_report(results(), tmp_path / "r")
    assert report["plots"] == ["pr_cat.png"] and (tmp_path / "r" / "pr_cat.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [r["summary"]["mAP"] for r in data["results"]] == [0.5, 0.25]


def test_without_matplotlib_the_report_says_how_to_get_plots(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text("{}")  # an earlier report: its folder may be replaced
    (tmp_path / "r" / "stale.png").write_text("old")
    report = write_report(results(), tmp_path / "r")
    assert report["plots"] == [] and report["plots_note"] == PLOTS_HINT
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.json"]   # replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
