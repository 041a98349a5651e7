"""solver_train.prototxt and solver_test.prototxt, as the published nets ship them.

Both run RMSProp with a multistep schedule and detection evaluation (11-point
mAP), or with --from-scratch Adam and a poly decay to 0
(generators/schedule.py). solver_train trains for `max_iter` iterations,
snapshotting; solver_test runs the test net once (max_iter 0,
test_initialization) to evaluate a model.
"""
from __future__ import annotations

from pathlib import Path

from caffessd import caffe_pb2
from caffessd.errors import CaffessdError
from caffessd.generators import schedule
from caffessd.generators.config import SSDConfig

SOLVER_KINDS = ("train", "test")


def build_solver(config: SSDConfig, kind: str, net_dir: str = "") -> caffe_pb2.SolverParameter:
    """The solver of `kind` ('train' or 'test') for nets written to `net_dir`."""
    if kind not in SOLVER_KINDS:
        raise CaffessdError(f"solver kind must be one of {', '.join(SOLVER_KINDS)}, got {kind!r}")
    config = config.resolved()
    train = kind == "train"
    solver = caffe_pb2.SolverParameter()
    solver.train_net = _join(net_dir, "train.prototxt")
    solver.test_net.append(_join(net_dir, "test.prototxt"))
    solver.test_iter.append(config.test_iter)
    solver.test_interval = config.test_interval
    solver.base_lr = config.lr
    solver.display = 10
    solver.max_iter = config.max_iter if train else 0
    scratch = config.from_scratch
    solver.lr_policy = schedule.FROM_SCRATCH.lr_policy if scratch else "multistep"
    if scratch:
        solver.power = schedule.FROM_SCRATCH.power
    else:
        solver.gamma = 0.5
    solver.weight_decay = config.weight_decay
    solver.snapshot = config.snapshot if train else 0
    solver.snapshot_prefix = config.snapshot_prefix or _join(net_dir, "snapshot/mobilenet")
    solver.solver_mode = caffe_pb2.SolverParameter.GPU
    solver.debug_info = False
    solver.snapshot_after_train = train
    solver.test_initialization = not train
    solver.average_loss = 10
    solver.stepvalue.extend(config.stepvalues)
    solver.iter_size = config.iter_size
    solver.type = config.solver_type
    if scratch and solver.type in ("SGD", "Nesterov", "Adam"):
        solver.momentum = schedule.FROM_SCRATCH.momentum
    if scratch and solver.type == "Adam":
        solver.momentum2 = schedule.FROM_SCRATCH.momentum2
    solver.eval_type = "detection"
    solver.ap_version = "11point"
    return solver


def _join(directory: str, name: str) -> str:
    return str(Path(directory) / name) if directory else name
