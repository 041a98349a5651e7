"""detect's cache of converted models (caffessd.inference.model_cache): checksummed
entries, rebuilt when broken, nothing cached that does not run, and a
read-only cache folder is a warning, not an error."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from caffessd.inference import model_cache as modelcache
from caffessd.errors import FormatError
from caffessd.inference.detector import Detector, default_model, run_once

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "models" / "yufacedetectnet" / "keliamoniz1.jpg"
SPEC = default_model()


def _detect(cache: Path):
    detector = Detector(SPEC.prototxt, SPEC.caffemodel, preprocessing=SPEC.preprocessing, labels=SPEC.labels,
                        cache=cache)
    return detector, [(d.label, round(d.score, 4)) for d in detector(PHOTO)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    detector, found = _detect(cache)
    assert detector.converted and found and found[0][0] == 1   # a face
    return detector.onnx_path, found


def _entries(cache: Path):
    return sorted(p.name for p in cache.iterdir())


def _tiny_onnx() -> bytes:
    """A valid ONNX model that is not the cached one (a 'foreign' file)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


BREAKAGES = {
    "truncated": lambda data: data[: len(data) // 3],
    "empty": lambda data: b"",
    "garbage": lambda data: os.urandom(4096),
    "foreign": lambda data: _tiny_onnx(),
}


@pytest.mark.parametrize("how", sorted(BREAKAGES) + ["no-checksum"])
def test_broken_entry_is_rebuilt(how, reference, tmp_path, capsys):
    entry, found = reference
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / entry.name
    good = entry.read_bytes()
    if how == "no-checksum":
        target.write_bytes(good)
    else:
        target.write_bytes(BREAKAGES[how](good))
        (cache / (entry.name + ".sha256")).write_text(modelcache.digest(good) + "\n")
    detector, again = _detect(cache)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"caffessd: warning: {target}: broken cache entry"), err
    assert detector.converted and again == found
    assert target.read_bytes() == good and modelcache.read_entry(target) == (good, None)
    # ... and the next run trusts it silently.
    detector, _ = _detect(cache)
    assert not detector.converted and not capsys.readouterr().err


def test_model_failing_in_onnxruntime_is_not_cached(tmp_path):
    """A model that converts but cannot run (here a Reshape to an impossible
    shape) raises one error and leaves no entry."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [4, 4])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "bad", [x], [y],
                              initializer=[shape])
    bad = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    target = tmp_path / "bad.onnx"
    with pytest.raises(FormatError, match="fails in onnxruntime"):
        modelcache.cached(target, lambda: bad, lambda data: run_once(data, "net.prototxt"))
    assert _entries(tmp_path) == []
    run_once(_tiny_onnx(), "tiny")  # a sound model passes


def test_read_only_cache_converts_in_memory(reference, tmp_path, monkeypatch, capsys):
    _, found = reference
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(cache, os.W_OK):  # root ignores mode bits: fail the write as the OS would for a user
        import tempfile

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        detector, again = _detect(cache)
    finally:
        cache.chmod(stat.S_IRWXU)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"caffessd: warning: {cache}: cannot cache"), err
    assert "in memory" in err[0]
    assert detector.onnx_path is None and again == found
    assert _entries(cache) == []


def test_cli_read_only_cache_is_a_warning(tmp_path, run_cli):
    """What a shell user sees: exit 0, detections, one warning line."""
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; covered in-process above")
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        result = run_cli("detect", "--cache-dir", cache, "--out", tmp_path / "det", PHOTO)
    finally:
        cache.chmod(stat.S_IRWXU)
    assert result.returncode == 0, result.stderr
    assert "caffessd: warning:" in result.stderr and "Traceback" not in result.stderr
