"""tf.distribute: MirroredStrategy over 2 logical CPU devices gives the result of
one device on the same global batch. Runs in a fresh process because logical
devices must be configured before TensorFlow starts (tests/train_distributed_run.py).

- Without BatchNorm, float32: weights after two SGD steps agree within 1e-5 of
  each blob's magnitude.
- With BatchNorm (every conv) and the net's default MAX_NEGATIVE mining, float64:
  one iteration's gradients and BatchNorm's updated running sums agree within
  1e-8 (measured ~2e-10). In float32 the same comparison differs by up to ~0.1:
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
