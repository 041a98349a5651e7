"""Training allocates TensorFlow's CPU tensors from its caching (BFC) allocator.

With TensorFlow's default (plain malloc), glibc gives a step's short-lived
tensors back to the kernel and faults them in again as fresh pages: 1.28x
slower steps for MobileNetV2-SSDLite 300 at batch 8 on the machine of
docs/train.md (scripts/benchmark_train.py's allocator table). The allocator
is chosen once per process, at its first tensor, so each case runs a real
training iteration in a fresh process. Only the BFC allocator keeps
statistics (tf.config.experimental.get_memory_info), which tells them apart.

On CPUs with AVX-512 VNNI, AVX-512 BF16 or AMX, TensorFlow turns its oneDNN
custom operations on by default, and then takes CPU tensors from oneDNN's own
caching allocator whatever TF_CPU_ALLOCATOR_USE_BFC says. The probes turn
oneDNN off (TF_ENABLE_ONEDNN_OPTS=0, already the default elsewhere) so that
the variable decides, on every CPU, and the tests can fail.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

TESTS = Path(__file__).resolve().parent

PROBE = """
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from train_helpers import small_config, synthetic_batches, synthetic_input, write_solver
from caffessd.train.trainer import Trainer

solver = write_solver(Path(sys.argv[2]), small_config(), max_iter=1, test_interval=0, snapshot=0)
trainer = Trainer(solver, input_fn=synthetic_input({"TRAIN": synthetic_batches(2, 64, 3, 1)}),
                  log=lambda line: None, progress=False)
_, _, grads = trainer.iteration()
trainer.solver.step(grads)

import tensorflow as tf

try:
    print("bfc", tf.config.experimental.get_memory_info("CPU:0")["peak"])
except ValueError:  # "Allocator stats not available": the malloc allocator
    print("malloc")
"""


def allocator_of_a_training_process(tmp_path, **env) -> list:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    environment.update(env, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    result = subprocess.run([sys.executable, "-c", PROBE, str(TESTS), str(tmp_path)], capture_output=True,
                            text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()


def test_training_uses_tensorflows_caching_cpu_allocator(tmp_path):
    found = allocator_of_a_training_process(tmp_path)
    assert found[0] == "bfc", found
    assert int(found[1]) > 1_000_000  # the step's tensors passed through it


def test_a_users_own_allocator_choice_is_kept(tmp_path):
    assert allocator_of_a_training_process(tmp_path, TF_CPU_ALLOCATOR_USE_BFC="false") == ["malloc"]
