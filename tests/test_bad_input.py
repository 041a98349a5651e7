"""Bad input, every command: one clear error line, non-zero exit, no traceback,
and nothing (not even a temp file) left in the output folder.

Most cases run `caffessd.cli.main` in-process (the same code path as the
console script, minus interpreter start-up) so the catalogue stays fast; a
few run as real subprocesses to check what a shell user sees. An exception
escaping `main` in-process is exactly what would print a traceback.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from caffessd import caffe_pb2, protoio
from caffessd.cli import main
from conftest import FACE_CAFFEMODEL, FACE_PHOTOS, FACE_PROTOTXT

TINY = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"""
# Line 3 is broken: the error must name it.
SYNTAX_ERROR = TINY.replace("dim: 8 dim: 8 }", "dim: 8 dim: eight }")
DANGLING = TINY.replace('bottom: "conv" top: "conv" }', 'bottom: "nowhere" top: "conv" }')
# LRN is known to shape inference but not to the ONNX converter.
LRN_LAYER = '\nlayer {{ name: "norm" type: "LRN" bottom: "{}" top: "norm" }}\n'
UNSUPPORTED = TINY + LRN_LAYER.format("conv")
BAD_LABELMAP = 'item { name: "background" label: 0 }\nitem { name: "face" label: one }\n'


def _caffemodel(prototxt_text: str, out_channels: int) -> bytes:
    param = protoio.parse_prototxt_text(prototxt_text, caffe_pb2.NetParameter())
    rng = np.random.default_rng(0)
    weights = {"conv": [rng.standard_normal((out_channels, 3, 3, 3)).astype(np.float32),
                        np.zeros(out_channels, np.float32)]}
    return protoio.serialize(protoio.caffemodel_from(param, weights))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """{placeholder: path} of every bad (and a few good) inputs."""
    root = tmp_path_factory.mktemp("bad_inputs")
    face_model = FACE_CAFFEMODEL.read_bytes()
    photo = FACE_PHOTOS[0].read_bytes()
    contents = {
        "empty": b"",
        "truncated.caffemodel": face_model[: len(face_model) // 2],
        "tiny.prototxt": TINY.encode(),
        "tiny.caffemodel": _caffemodel(TINY, 4),
        "mismatch.caffemodel": _caffemodel(TINY, 8),
        "syntax.prototxt": SYNTAX_ERROR.encode(),
        "dangling.prototxt": DANGLING.encode(),
        "unsupported.prototxt": UNSUPPORTED.encode(),
        "labelmap.prototxt": BAD_LABELMAP.encode(),
        # The face detector with one layer the ONNX converter lacks.
        "face_lrn.prototxt": FACE_PROTOTXT.read_bytes() + LRN_LAYER.format("conv1_1").encode(),
        # A JPEG header followed by garbage, and text dressed up as a JPEG.
        "corrupt.jpg": photo[:600] + bytes(range(256)) * 8,
        "notanimage.jpg": b"this is not an image\n",
        "blocker": b"a plain file where a folder is needed\n",
        "pipeline.config": b"model {\n  ssd {\n    num_classes: 3\n  }\n}}\n",
        "classmap.txt": b"1 person\nnot a line\n",
    }
    paths = {"dir": root / "a_folder", "missing": root / "does_not_exist.prototxt",
             "face.prototxt": FACE_PROTOTXT, "face.caffemodel": FACE_CAFFEMODEL,
             "photo": FACE_PHOTOS[0]}
    paths["dir"].mkdir()
    for name, data in contents.items():
        (root / name).write_bytes(data)
        paths[name] = root / name
    # A valid ONNX model that is no detector (no DetectionOutput rows).
    from caffessd.net import Net
    from caffessd.onnxconv import to_onnx

    paths["tiny.onnx"] = root / "tiny.onnx"
    model = to_onnx(Net.load(paths["tiny.prototxt"], paths["tiny.caffemodel"]))
    paths["tiny.onnx"].write_bytes(model.SerializeToString())
    return paths


@dataclass
class Case:
    id: str
    args: Sequence[str]        # {placeholder} = a path from `files`; {out} = the output folder
    names: str                 # the last stderr line must contain this (file or option) ...
    says: str                  # ... and this (what is wrong), case-insensitively
    code: int = 1


def _cases() -> list:
    E = ["export-onnx"]
    D = ["detect", "--cache-dir", "{out}/cache", "--out", "{out}/det"]
    M = ["merge-bn", "--no-verify"]
    G = ["gen-model", "-o", "{out}/gen"]
    return [
        # ---- inspect
        Case("inspect/missing", ["inspect", "{missing}"], "{missing}", "no such file"),
        Case("inspect/folder", ["inspect", "{dir}"], "{dir}", "is a directory", 2),
        Case("inspect/empty", ["inspect", "{empty}"], "{empty}", "no layers"),
        Case("inspect/caffemodel-as-prototxt", ["inspect", "{face.caffemodel}"], "{face.caffemodel}", "expected a text prototxt"),
        Case("inspect/syntax-error", ["inspect", "{syntax.prototxt}"], "{syntax.prototxt}:3", "eight"),
        Case("inspect/dangling-bottom", ["inspect", "{dangling.prototxt}"], "{dangling.prototxt}", "nowhere"),
        Case("inspect/truncated-weights", ["inspect", "{face.prototxt}", "-w", "{truncated.caffemodel}"],
             "{truncated.caffemodel}", "not a binary caffemodel"),
        Case("inspect/prototxt-as-weights", ["inspect", "{face.prototxt}", "-w", "{face.prototxt}"],
             "{face.prototxt}", "text prototxt"),
        Case("inspect/empty-weights", ["inspect", "{tiny.prototxt}", "-w", "{empty}"], "{empty}", "no layers"),
        Case("inspect/shape-mismatch", ["inspect", "{tiny.prototxt}", "-w", "{mismatch.caffemodel}"],
             "{mismatch.caffemodel}", "shape"),
        Case("inspect/input-shape-rank", ["inspect", "{tiny.prototxt}", "--input-shape", "1,3"],
             "{tiny.prototxt}", "dimensions"),
        Case("inspect/input-too-small", ["inspect", "{tiny.prototxt}", "--input-shape", "1,3,2,2"],
             "{tiny.prototxt}", "too small"),
        Case("inspect/bad-input-shape", ["inspect", "{tiny.prototxt}", "--input-shape", "1,3,x"],
             "--input-shape", "integers", 2),
        Case("inspect/zero-input-shape", ["inspect", "{tiny.prototxt}", "--input-shape", "1,3,0,0"],
             "--input-shape", "positive", 2),
        # ---- export-onnx
        Case("export/missing", E + ["{missing}", "{tiny.caffemodel}", "-o", "{out}/m.onnx"], "{missing}", "no such file"),
        Case("export/folder", E + ["{tiny.prototxt}", "{dir}", "-o", "{out}/m.onnx"], "{dir}", "is a directory", 2),
        Case("export/empty-prototxt", E + ["{empty}", "{tiny.caffemodel}", "-o", "{out}/m.onnx"], "{empty}", "no layers"),
        Case("export/truncated", E + ["{face.prototxt}", "{truncated.caffemodel}", "-o", "{out}/m.onnx"],
             "{truncated.caffemodel}", "not a binary caffemodel"),
        Case("export/swapped", E + ["{tiny.caffemodel}", "{tiny.prototxt}", "-o", "{out}/m.onnx"],
             "{tiny.caffemodel}", "expected a text prototxt"),
        Case("export/prototxt-as-caffemodel", E + ["{tiny.prototxt}", "{tiny.prototxt}", "-o", "{out}/m.onnx"],
             "{tiny.prototxt}", "text prototxt"),
        Case("export/syntax-error", E + ["{syntax.prototxt}", "{tiny.caffemodel}", "-o", "{out}/m.onnx"],
             "{syntax.prototxt}:3", "eight"),
        Case("export/dangling-bottom", E + ["{dangling.prototxt}", "{tiny.caffemodel}", "-o", "{out}/m.onnx"],
             "{dangling.prototxt}", "nowhere"),
        Case("export/unsupported-layer", E + ["{unsupported.prototxt}", "{tiny.caffemodel}", "-o", "{out}/m.onnx"],
             "'norm'", "LRN"),
        Case("export/shape-mismatch", E + ["{tiny.prototxt}", "{mismatch.caffemodel}", "-o", "{out}/m.onnx"],
             "{mismatch.caffemodel}", "shape"),
        Case("export/output-below-file", E + ["{tiny.prototxt}", "{tiny.caffemodel}", "-o", "{blocker}/m.onnx"],
             "{blocker}", "not a folder"),
        Case("export/output-is-folder", E + ["{tiny.prototxt}", "{tiny.caffemodel}", "-o", "{dir}"], "{dir}", "is a directory", 2),
        Case("export/bad-labels", E + ["{tiny.prototxt}", "{tiny.caffemodel}", "-o", "{out}/m.onnx",
                                       "--labels", "{labelmap.prototxt}"], "{labelmap.prototxt}:2", "one"),
        Case("export/opset", E + ["{tiny.prototxt}", "{tiny.caffemodel}", "-o", "{out}/m.onnx", "--opset", "99"],
             "opset", "13..21"),
        Case("export/input-size-0x0", E + ["{tiny.prototxt}", "{tiny.caffemodel}", "-o", "{out}/m.onnx",
                                           "--input-size", "0x0"], "--input-size", "positive"),
        Case("export/input-size-too-small", E + ["{tiny.prototxt}", "{tiny.caffemodel}", "-o", "{out}/m.onnx",
                                                 "--input-size", "2x2"], "{tiny.prototxt}", "too small"),
        Case("export/bad-mean", E + ["{tiny.prototxt}", "{tiny.caffemodel}", "-o", "{out}/m.onnx", "--mean", "a,b"],
             "--mean", "numbers"),
        # ---- detect
        Case("detect/missing-image", D + ["{missing}"], "{missing}", "no such file"),
        Case("detect/empty-folder", D + ["{dir}"], "{dir}", "no images"),
        Case("detect/corrupt-jpeg", D + ["{corrupt.jpg}"], "{corrupt.jpg}", "cannot decode"),
        Case("detect/not-an-image", D + ["{notanimage.jpg}"], "{notanimage.jpg}", "cannot decode"),
        Case("detect/truncated-weights", D + ["--model", "{face.prototxt}", "--weights", "{truncated.caffemodel}",
                                              "{photo}"], "{truncated.caffemodel}", "not a binary caffemodel"),
        Case("detect/swapped", D + ["--model", "{face.caffemodel}", "--weights", "{face.prototxt}", "{photo}"],
             "{face.caffemodel}", "expected a text prototxt"),
        Case("detect/missing-weights", D + ["--model", "{face.prototxt}", "--weights", "{missing}", "{photo}"],
             "{missing}", "no such file"),
        Case("detect/model-without-weights", D + ["--model", "{face.prototxt}", "{photo}"], "--weights", "go together", 2),
        Case("detect/unsupported-layer", D + ["--model", "{face_lrn.prototxt}", "--weights", "{face.caffemodel}",
                                              "{photo}"], "'norm'", "LRN"),
        Case("detect/shape-mismatch", D + ["--model", "{tiny.prototxt}", "--weights", "{mismatch.caffemodel}",
                                           "{photo}"], "{mismatch.caffemodel}", "shape"),
        Case("detect/not-a-detector", D + ["--model", "{tiny.prototxt}", "--weights", "{tiny.caffemodel}", "{photo}"],
             "{tiny.prototxt}", "no DetectionOutput"),
        Case("detect/onnx-not-a-detector", D + ["--onnx", "{tiny.onnx}", "{photo}"], "{tiny.onnx}", "not an SSD detector"),
        Case("detect/mean-without-model", D + ["--mean", "1", "{photo}"], "--model", "preprocessing", 2),
        Case("detect/onnx-not-onnx", D + ["--onnx", "{tiny.prototxt}", "{photo}"], "{tiny.prototxt}",
             "part of a Caffe model, not an exported one"),
        Case("detect/onnx-empty", D + ["--onnx", "{empty}", "{photo}"], "{empty}", "ONNX"),
        Case("detect/bad-labels", D + ["--labels", "{labelmap.prototxt}", "{photo}"], "{labelmap.prototxt}:2", "one"),
        Case("detect/labels-caffemodel", D + ["--labels", "{face.caffemodel}", "{photo}"], "{face.caffemodel}",
             "not UTF-8"),
        Case("detect/negative-threshold", D + ["--threshold", "-1", "{photo}"], "--threshold", "range", 2),
        Case("detect/threshold-above-1", D + ["--threshold", "1.5", "{photo}"], "--threshold", "range", 2),
        Case("detect/out-below-file", ["detect", "--cache-dir", "{out}/cache", "--out", "{blocker}/det", "{photo}"],
             "{blocker}", "not a folder"),
        Case("detect/json-below-file", D + ["--json", "{blocker}/d.json", "{photo}"], "{blocker}", "not a folder"),
        Case("detect/cache-below-file", ["detect", "--cache-dir", "{blocker}/cache", "--out", "{out}/det",
                                         "--model", "{face.prototxt}", "--weights", "{face.caffemodel}", "{photo}"],
             "{blocker}", "not a folder"),
        Case("detect/bad-mean", D + ["--model", "{face.prototxt}", "--weights", "{face.caffemodel}",
                                     "--mean", "1,2", "{photo}"], "--mean", "1 or 3 values", 2),
        Case("detect/zero-threads", D + ["--threads", "-3", "{photo}"], "--threads", "range", 2),
        # ---- merge-bn
        Case("merge-bn/missing", M + ["-m", "{missing}", "-w", "{face.caffemodel}", "-o", "{out}/m"],
             "{missing}", "no such file"),
        Case("merge-bn/truncated", M + ["-m", "{face.prototxt}", "-w", "{truncated.caffemodel}", "-o", "{out}/m"],
             "{truncated.caffemodel}", "not a binary caffemodel"),
        Case("merge-bn/swapped", M + ["-m", "{face.caffemodel}", "-w", "{face.prototxt}", "-o", "{out}/m"],
             "{face.caffemodel}", "expected a text prototxt"),
        Case("merge-bn/syntax-error", M + ["-m", "{syntax.prototxt}", "-w", "{tiny.caffemodel}", "-o", "{out}/m"],
             "{syntax.prototxt}:3", "eight"),
        Case("merge-bn/dangling-bottom", M + ["-m", "{dangling.prototxt}", "-w", "{tiny.caffemodel}", "-o", "{out}/m"],
             "{dangling.prototxt}", "nowhere"),
        Case("merge-bn/shape-mismatch", M + ["-m", "{tiny.prototxt}", "-w", "{mismatch.caffemodel}", "-o", "{out}/m"],
             "{mismatch.caffemodel}", "shape"),
        Case("merge-bn/out-below-file", M + ["-m", "{tiny.prototxt}", "-w", "{tiny.caffemodel}", "-o", "{blocker}/m"],
             "{blocker}", "not a folder"),
        Case("merge-bn/caffemodel-out-below-file",
             M + ["-m", "{tiny.prototxt}", "-w", "{tiny.caffemodel}", "--prototxt-out", "{out}/m.prototxt",
                  "--caffemodel-out", "{blocker}/m.caffemodel"], "{blocker}", "not a folder"),
        Case("merge-bn/unsupported-verify", ["merge-bn", "-m", "{unsupported.prototxt}", "-w", "{tiny.caffemodel}",
                                             "-o", "{out}/m"], "'norm'", "LRN"),
        Case("merge-bn/negative-tolerance", M + ["-m", "{tiny.prototxt}", "-w", "{tiny.caffemodel}", "-o", "{out}/m",
                                                 "--tolerance", "-1"], "--tolerance", "range", 2),
        # ---- gen-model
        Case("gen-model/bad-labelmap", G + ["--labelmap", "{labelmap.prototxt}"], "{labelmap.prototxt}:2", "one"),
        Case("gen-model/missing-labelmap", G + ["--labelmap", "{missing}"], "{missing}", "no such file"),
        Case("gen-model/labelmap-caffemodel", G + ["--labelmap", "{face.caffemodel}"], "{face.caffemodel}",
             "not UTF-8"),
        Case("gen-model/width-0", G + ["--width", "0"], "width", "0.25"),
        Case("gen-model/input-0x0", G + ["--input", "0x0"], "--input", "positive"),
        Case("gen-model/classes-1", G + ["--classes", "1"], "classes", "2"),
        Case("gen-model/out-below-file", ["gen-model", "-o", "{blocker}/gen"], "{blocker}", "not a folder"),
        Case("gen-model/init-weights-below-file", G + ["--init-weights", "{blocker}/w.caffemodel"],
             "{blocker}", "not a folder"),
        # ---- convert-tf (only cases that fail before any real conversion)
        Case("convert-tf/missing-ckpt", ["convert-tf", "{missing}", "-o", "{out}/tf"], "{missing}", "checkpoint"),
        Case("convert-tf/empty-folder", ["convert-tf", "{dir}", "-o", "{out}/tf"], "{dir}", "checkpoint"),
        Case("convert-tf/empty-pb", ["convert-tf", "{empty}", "-o", "{out}/tf"], "{empty}", "checkpoint"),
        Case("convert-tf/bad-pipeline", ["convert-tf", "{dir}", "--pipeline", "{pipeline.config}", "-o", "{out}/tf"],
             "{pipeline.config}:5", "unbalanced"),
        Case("convert-tf/bad-class-map", ["convert-tf", "{dir}", "--class-map", "{classmap.txt}", "-o", "{out}/tf"],
             "{classmap.txt}:2", "TF_ID"),
        Case("convert-tf/keras-missing", ["convert-tf", "--keras", "{missing}", "-o", "{out}/tf"],
             "{missing}", "no such file"),
        Case("convert-tf/input-0x0", ["convert-tf", "{dir}", "--input", "0x0", "-o", "{out}/tf"], "--input", "positive"),
        Case("convert-tf/out-below-file", ["convert-tf", "--keras", "{face.caffemodel}", "-o", "{blocker}/tf"],
             "{blocker}", "not a folder"),
        # ---- train (cases that fail before TensorFlow loads)
        Case("train/missing-solver", ["train", "{missing}"], "{missing}", "no such file"),
        Case("train/solver-syntax-error", ["train", "{syntax.prototxt}"], "{syntax.prototxt}:", "SolverParameter"),
        Case("train/weights-and-resume", ["train", "{tiny.prototxt}", "--weights", "{tiny.caffemodel}",
                                          "--resume", "{tiny.caffemodel}"], "--resume", "not both"),
    ]


CASES = _cases()


def _expand(text: str, files: dict, out: Path) -> str:
    """Replace each {placeholder} by its path ({out}: the output folder)."""
    return re.sub(r"\{([^}]+)\}", lambda m: str(out if m.group(1) == "out" else files[m.group(1)]), text)


def _listing(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _check(case: Case, code: int, stderr: str, files: dict, out: Path, before: list) -> None:
    assert "Traceback" not in stderr, stderr
    assert code == case.code, f"exit {code}, expected {case.code}; stderr:\n{stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "no error message on stderr"
    last = lines[-1]
    named = _expand(case.names, files, out)
    assert named in last, f"last stderr line does not name it: {last!r}"
    # What is wrong must be said besides the name (a path may contain the same word).
    assert case.says.lower() in last.replace(named, "").lower(), f"last stderr line does not say {case.says!r}: {last!r}"
    # Nothing written: no output, no stray temp file. Folders made on the way
    # are tolerated, and so is detect's cache of the converted model (not an output).
    left = [p for p in _listing(out)
            if p not in before and not (out / p).is_dir() and not (p.startswith("cache/") and p.endswith((".onnx", ".onnx.sha256")))]
    assert not left, f"left behind in the output folder: {left}"
    assert not [p for p in _listing(files["dir"].parent) if p.endswith(".tmp")]


@pytest.fixture
def out(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, files, out, capsys):
    if case.id.startswith("convert-tf/"):
        pytest.importorskip("tensorflow")
    argv = [_expand(arg, files, out) for arg in case.args]
    before = _listing(out)
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    else:
        code = 0
    _check(case, code, capsys.readouterr().err, files, out, before)


# A real process for one case per command: what a shell user actually sees.
SUBPROCESS_CASES = ["inspect/syntax-error", "export/unsupported-layer", "detect/corrupt-jpeg",
                    "merge-bn/caffemodel-out-below-file", "gen-model/bad-labelmap"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_subprocess(case_id, files, out, run_cli):
    case = next(c for c in CASES if c.id == case_id)
    before = _listing(out)
    result = run_cli(*[_expand(arg, files, out) for arg in case.args])
    _check(case, result.returncode, result.stderr, files, out, before)
