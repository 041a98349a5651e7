"""Hostile-but-realistic input (issue 9): outputs that would destroy inputs,
foreign ONNX files, interrupts, one error line always, a full disk, and cost
in proportion to the input. Memory limits: test_memory_limits.py; Caffe's
layer checks: test_validate.py; the cache: test_model_cache.py."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from caffessd import caffe_pb2, protoio
from conftest import run_in_process

ROOT = Path(__file__).resolve().parent.parent
FACE = ROOT / "models" / "yufacedetectnet"
PROTOTXT = FACE / "yufacedetectnet-open-v2.prototxt"
CAFFEMODEL = FACE / "yufacedetectnet-open-v2.caffemodel"
PHOTO = FACE / "keliamoniz1.jpg"
TINY = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
"""


def _run(argv, capsys):
    """(exit code, non-blank stderr lines, stdout)."""
    code, err, out = run_in_process(argv, capsys)
    return code, [line for line in err.splitlines() if line.strip()], out


def _one_error(code, lines, *words, exit_code=1):
    assert code == exit_code and len(lines) == 1 and lines[0].startswith("caffessd: error: "), (code, lines)
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def tiny(tmp_path):
    prototxt = tmp_path / "tiny.prototxt"
    prototxt.write_text(TINY)
    param = protoio.parse_prototxt_text(TINY, caffe_pb2.NetParameter())
    rng = np.random.default_rng(0)
    weights = {"conv": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), np.zeros(4, np.float32)],
               "bn": [rng.random(4).astype(np.float32), rng.random(4).astype(np.float32) + 0.5,
                      np.ones(1, np.float32)]}
    caffemodel = tmp_path / "tiny.caffemodel"
    caffemodel.write_bytes(protoio.serialize(protoio.caffemodel_from(param, weights)))
    return prototxt, caffemodel


# ---------------------------------------------------------------- outputs that destroy inputs

def test_export_refuses_to_overwrite_its_caffemodel(tiny, capsys):
    prototxt, caffemodel = tiny
    before = caffemodel.read_bytes()
    code, lines, _ = _run(["export-onnx", prototxt, caffemodel, "-o", caffemodel], capsys)
    _one_error(code, lines, str(caffemodel), "would overwrite the caffemodel")
    assert caffemodel.read_bytes() == before


@pytest.mark.parametrize("which", ["prototxt", "caffemodel"])
def test_merge_bn_refuses_to_overwrite_its_inputs(which, tiny, capsys):
    prototxt, caffemodel = tiny
    before = (prototxt.read_bytes(), caffemodel.read_bytes())
    outs = {"prototxt": ["--prototxt-out", prototxt, "--caffemodel-out", prototxt.with_suffix(".new")],
            "caffemodel": ["--prototxt-out", caffemodel.with_suffix(".new"), "--caffemodel-out", caffemodel]}
    code, lines, _ = _run(["merge-bn", "-m", prototxt, "-w", caffemodel, *outs[which]], capsys)
    _one_error(code, lines, f"would overwrite the {which}")
    assert (prototxt.read_bytes(), caffemodel.read_bytes()) == before


@pytest.mark.parametrize("trailing", ["", "/"])
def test_merge_bn_folder_output_writes_inside_it(trailing, tiny, tmp_path, capsys):
    prototxt, caffemodel = tiny
    folder = tmp_path / "merged"
    if not trailing:
        folder.mkdir()   # an existing folder without the slash
    code, lines, _ = _run(["merge-bn", "-m", prototxt, "-w", caffemodel, "-o", f"{folder}{trailing}"], capsys)
    assert code == 0, lines
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.caffemodel", "tiny.prototxt"]
    assert not (tmp_path / "merged.prototxt").exists()


# ---------------------------------------------------------------- foreign ONNX

def _foreign_detection_out() -> bytes:
    """An ONNX model whose only output happens to be called detection_out, 1x1x10x7."""
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 240, 320])
    y = helper.make_tensor_value_info("detection_out", TensorProto.FLOAT, [1, 1, 10, 7])
    zeros = helper.make_tensor("zeros", TensorProto.FLOAT, [1, 1, 10, 7], [0.0] * 70)
    pooled = helper.make_node("ReduceMean", ["data"], ["mean"], keepdims=1)
    graph = helper.make_graph([pooled, helper.make_node("Mul", ["mean", "zeros"], ["detection_out"])],
                              "foreign", [x], [y], initializer=[zeros])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_foreign_onnx_named_detection_out_is_refused(tmp_path, capsys):
    model = tmp_path / "foreign.onnx"
    model.write_bytes(_foreign_detection_out())
    code, lines, _ = _run(["detect", "--onnx", model, "--out", tmp_path / "det", PHOTO], capsys)
    _one_error(code, lines, str(model), "not an SSD detector made by caffessd")
    assert not (tmp_path / "det").exists() or not any((tmp_path / "det").iterdir())


def test_raw_export_is_refused(tmp_path, capsys):
    raw = tmp_path / "raw.onnx"
    assert _run(["export-onnx", PROTOTXT, CAFFEMODEL, "-o", raw, "--raw"], capsys)[0] == 0
    code, lines, _ = _run(["detect", "--onnx", raw, "--out", tmp_path / "det", PHOTO], capsys)
    _one_error(code, lines, str(raw), "--raw")


# ---------------------------------------------------------------- one line, always

def test_bom_and_crlf_prototxt(tmp_path, capsys):
    """A Windows-saved prototxt reads; a mistake in one is still one line."""
    good = tmp_path / "win.prototxt"
    good.write_bytes(b"\xef\xbb\xbf" + TINY.replace("\n", "\r\n").encode())
    code, lines, out = _run(["inspect", good], capsys)
    assert code == 0 and "conv" in out, lines
    bad = tmp_path / "winbad.prototxt"
    bad.write_bytes(b"\xef\xbb\xbf" + TINY.replace("kernel_size: 3", "kernel_size: three").replace("\n", "\r\n").encode())
    code, lines, _ = _run(["inspect", bad], capsys)
    _one_error(code, lines, f"{bad}:5")
    assert "\r" not in lines[0]


@pytest.mark.parametrize("option,kind", [("--out", "file"), ("--json", "folder"), ("--cache-dir", "file")])
def test_path_option_of_the_wrong_kind(option, kind, tmp_path, capsys):
    path = tmp_path / "thing"
    path.mkdir() if kind == "folder" else path.write_text("x")
    code, lines, _ = _run(["detect", option, path, PHOTO], capsys)
    _one_error(code, lines, f"caffessd: error: {path}: is a", option, exit_code=2)


def test_usage_errors_are_one_line(capsys):
    code, lines, _ = _run(["detect", "--threshold", "3"], capsys)
    _one_error(code, lines, "--threshold", "caffessd detect --help", exit_code=2)


def test_gen_model_full_disk_leaves_nothing(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing: one line, no output folder left behind."""
    import os

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    out = tmp_path / "deep" / "gen"
    code, lines, _ = _run(["gen-model", "--stage", "deploy", "--init-weights", out / "w.caffemodel", "-o", out],
                          capsys)
    _one_error(code, lines, "No space left on device")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- cost in proportion

def _relu_chain(tmp_path, count: int):
    lines = [TINY.split('layer { name: "bn"')[0]]
    lines += [f'layer {{ name: "relu{i}" type: "ReLU" bottom: "conv" top: "conv" }}' for i in range(count)]
    path = tmp_path / f"chain{count}.prototxt"
    path.write_text("\n".join(lines))
    return path


def test_long_in_place_chain_converts_in_linear_time(tmp_path):
    """8,000 in-place ReLUs on one blob: naming their ONNX values used to
    rescan every earlier suffix (quadratic: ~25 s here); now well under 10 s."""
    from caffessd.net import Net
    from caffessd.onnxconv import to_onnx

    net = Net.load(_relu_chain(tmp_path, 8000))
    net.weights["conv"] = [np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)]
    start = time.perf_counter()
    model = to_onnx(net)
    assert len(model.graph.node) == 8001
    assert time.perf_counter() - start < 10


def test_inspect_elides_a_huge_layer_name(tmp_path, capsys):
    name = "x" * 1_000_000
    path = tmp_path / "long.prototxt"
    path.write_text(TINY.replace('name: "conv"', f'name: "{name}"'))
    code, lines, out = _run(["inspect", path], capsys)
    assert code == 0, lines
    assert max(len(line) for line in out.splitlines()) < 200
    assert "xxx...xxx" in out


# ---------------------------------------------------------------- interrupts

def test_interrupted_detect_keeps_finished_json(tmp_path):
    """Ctrl-C in the middle of a folder: exit 130, the JSON of every finished
    image, one line saying how many were done."""
    COUNT = 3000
    images = tmp_path / "images"
    images.mkdir()
    # Enough images that the run cannot finish before the signal arrives (a quiet machine
    # detects the face photo at ~150 images/s): hard links, so 3000 cost no disk.
    first = images / "p0000.jpg"
    shutil.copyfile(PHOTO, first)
    for i in range(1, COUNT):
        os.link(first, images / f"p{i:04d}.jpg")
    out = tmp_path / "det"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT
    # ignored: under such a runner (CI in a background job) Ctrl-C would never reach detect.
    # The child restores Python's own handler first, as an interactive terminal has it.
    start = ("import signal, sys; from caffessd.cli import main; "
             "signal.signal(signal.SIGINT, signal.default_int_handler); main(sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", start, "detect", images, "--out", out, "--cache-dir",
                             tmp_path / "cache"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.jpg"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip() and "detecting" not in line]
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    done = json.loads((out / "detections.json").read_text())
    assert 3 <= len(done) < COUNT
    assert lines[-1] == (f"caffessd: interrupted after {len(done)} of {COUNT} image(s); their detections are in "
                         f"{out / 'detections.json'}")
    assert all(len(entry["detections"]) == 1 for entry in done)


def test_detect_refuses_to_replace_its_image(tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    shutil.copyfile(PHOTO, photo)
    code, lines, _ = _run(["detect", photo, "--out", tmp_path, "--cache-dir", tmp_path / "cache"], capsys)
    _one_error(code, lines, str(photo), "would overwrite the image")
    assert photo.read_bytes() == PHOTO.read_bytes()
