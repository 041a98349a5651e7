"""Sizes that would blow memory are refused, with one line naming the layer,
before anything is allocated (caffessd.validate.memory).

Each case runs in its own process under an address-space limit
(RLIMIT_AS, as `ulimit -v` does): without the estimate these runs died with
numpy MemoryError tracebacks or a segfault; now they must end with exactly
one `caffessd: error:` line, and the good net must still run under the same
limit (so the limit is not what refuses).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from caffessd.net import Net
from caffessd.summary import format_table, summarize
from conftest import FACE_CAFFEMODEL as CAFFEMODEL, FACE_PHOTOS, FACE_PROTOTXT as PROTOTXT, ROOT

resource = pytest.importorskip("resource")

PHOTO = FACE_PHOTOS[0]
LIMIT = 3 * 2 ** 30  # address space for the whole process, interpreter and onnxruntime included


def _limited(*args, cwd):
    """`python -m caffessd ARGS` with at most LIMIT bytes of address space."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("CAFFESSD_MAX_MEMORY", None)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    return subprocess.run([sys.executable, "-m", "caffessd", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, preexec_fn=limit, timeout=120)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    text = PROTOTXT.read_text()
    batch = root / "batch.prototxt"
    batch.write_text(text.replace("dim: 1\n", "dim: 1000000\n", 1))
    pad = root / "pad.prototxt"
    pad.write_text(text.replace("pad: 1\n", "pad: 2000000000\n", 1))
    return {"batch": batch, "pad": pad}


def _one_error(result, *words):
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("caffessd: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


CASES = {
    "inspect-batch": (lambda n, out: ["inspect", n["batch"]], ["input 'data' 1000000x3x240x320", "beyond"]),
    "export-batch": (lambda n, out: ["export-onnx", n["batch"], CAFFEMODEL, "-o", out / "m.onnx"],
                     ["input 'data' 1000000x3x240x320", "beyond"]),
    "export-input-size": (lambda n, out: ["export-onnx", PROTOTXT, CAFFEMODEL, "-o", out / "m.onnx",
                                          "--input-size", "100000x100000"], ["input 'data' 1x3x100000x100000"]),
    "merge-bn-pad": (lambda n, out: ["merge-bn", "-m", n["pad"], "-w", CAFFEMODEL, "-o", out / "m"],
                     ["layer 'conv1_1' (Convolution)", "beyond"]),
    "detect-pad": (lambda n, out: ["detect", "--model", n["pad"], "--weights", CAFFEMODEL, "--cache-dir",
                                   out / "cache", "--out", out / "det", PHOTO], ["layer 'conv1_1'", "beyond"]),
    "max-memory": (lambda n, out: ["export-onnx", PROTOTXT, CAFFEMODEL, "-o", out / "m.onnx", "--max-memory", "5M"],
                   ["layer 'conv2_1' (Convolution)", "5.0 MB limit set by --max-memory"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_under_a_memory_limit(case, nets, tmp_path):
    make_args, words = CASES[case]
    out = tmp_path / "out"
    result = _limited(*make_args(nets, out), cwd=tmp_path)
    _one_error(result, *words)
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_good_net_runs_under_the_same_limit(tmp_path):
    result = _limited("export-onnx", PROTOTXT, CAFFEMODEL, "-o", tmp_path / "m.onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "m.onnx").stat().st_size > 1_000_000


def test_inspect_shows_the_estimate():
    """blobs: every non-in-place output once; priors: PriorBox outputs; weights: parameters x 4."""
    summary = summarize(PROTOTXT, CAFFEMODEL)
    net = Net.load(PROTOTXT)
    blobs = priors = 0
    for info in net.walk():
        for top, shape in zip(info.layer.top, info.output_shapes):
            if top in info.layer.bottom:
                continue
            count = 1
            for dim in shape:
                count *= 50 if dim == -1 else dim  # keep_top_k rows
            if info.type == "PriorBox":
                priors += count * 4
            else:
                blobs += count * 4
    blobs += 1 * 3 * 240 * 320 * 4  # the input
    assert summary.memory == {"blobs": blobs, "priors": priors, "weights": summary.total_params * 4,
                              "total": blobs + priors + summary.total_params * 4}
    assert format_table(summary).splitlines()[-1].startswith("memory: 11.6 MB (blobs 8.1 MB")
