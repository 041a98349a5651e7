"""tf.distribute: MirroredStrategy over 2 logical CPU devices gives the result of
one device on the same global batch. Runs in a fresh process because logical
devices must be configured before TensorFlow starts (tests/train_distributed_run.py).

- Without BatchNorm, float32: weights after two SGD steps agree within 1e-5 of
  each blob's magnitude.
- With BatchNorm (every conv) and the net's default MAX_NEGATIVE mining, float64:
  one iteration's gradients and BatchNorm's updated running sums agree within
  1e-8 (measured ~2e-10). In float32 the same comparison differs by up to ~0.2:
  BatchNorm over 1x1 maps of 4 images amplifies rounding, and TensorFlow's own
  fused kernel differs from the two-pass form by as much on ONE device, so a
  float32 bound would test rounding, not the synchronisation.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

HERE = Path(__file__).resolve().parent


def run_distributed(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, str(HERE / "train_distributed_run.py"), *args],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    values = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    return float(values["worst"]), out.stdout


def test_mirrored_two_cpus_equals_one_device():
    worst, stdout = run_distributed("weights", "none", "2")
    assert worst < 1e-5, stdout


def test_mirrored_batchnorm_and_mining_equal_one_device_in_float64():
    worst, stdout = run_distributed("grads", "all", "64", "float64")
    assert worst < 1e-8, stdout


def _free_ports(count):
    import socket

    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    except OSError as error:
        pytest.skip(f"cannot bind a localhost port: {error}")
    finally:
        for s in sockets:
            s.close()


def test_multiworker_two_localhost_workers_equal_one_device(tmp_path):
    """TF_CONFIG with 2 localhost workers -> MultiWorkerMirroredStrategy (as
    `caffessd train` builds it): the chief's snapshot after two SGD steps equals
    one device's on the same global batches (1e-5 of each blob's magnitude), and
    only the chief logs and writes."""
    import numpy as np

    from caffessd import protoio

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    ports = ",".join(str(p) for p in _free_ports(2))
    script = str(HERE / "train_multiworker_run.py")
    commands = [[script, str(tmp_path), "worker", "0", ports], [script, str(tmp_path), "worker", "1", ports],
                [script, str(tmp_path), "one"]]
    processes = [subprocess.Popen([sys.executable, *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env) for c in commands]
    results = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
        assert process.returncode == 0, stderr[-2000:]
        results.append(dict(line.split(" ", 1) for line in stdout.strip().splitlines()))
    chief, other, one = results
    assert chief["replicas"] == "2" and one["replicas"] == "1"
    assert chief["chief"] == "True" and other["chief"] == "False"
    assert other["snapshot"] == "None" and other["log_lines"] == "0" and int(chief["log_lines"]) > 0
    assert not list((tmp_path / "worker1" / "snap").glob("*.caffemodel"))
    distributed = protoio.read_caffemodel(chief["snapshot"])
    single = protoio.read_caffemodel(one["snapshot"])
    blobs = {layer.name: layer.blobs for layer in single.layer}
    compared = 0
    for layer in distributed.layer:
        for a, b in zip(blobs[layer.name], layer.blobs):
            a, b = np.asarray(a.data), np.asarray(b.data)
            assert np.abs(a - b).max() <= 1e-5 * max(np.abs(a).max(), 1e-3), layer.name
            compared += 1
    assert compared > 20
