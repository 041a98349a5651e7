"""Caffe's solvers on TensorFlow variables (src/caffe/solvers/*.cpp, solver.cpp).

One update, as SGDSolver::ApplyUpdate does it, for the gradient accumulated
over `iter_size` forward/backward passes:

    rate = learning_rate(iter)                      lr_policy
    clip: if ||g|| > clip_gradients, g *= clip / ||g||   (over all params, before normalising)
    g /= iter_size                                  Normalize
    g += weight_decay * decay_mult * (w | sign(w))  Regularize (L2 | L1)
    w -= update(g, rate * lr_mult, history)         ComputeUpdateValue per solver type

History blobs are kept for every learnable blob of the net in order (BatchNorm
statistics included, as Caffe's learnable_params), twice over for AdaDelta and
Adam, so that a .solverstate has Caffe's layout.
"""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from caffessd import caffe_pb2, protoio
from caffessd.errors import CaffessdError, FormatError
from caffessd.train.tfimport import tensorflow

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
_LEGACY_TYPES = {caffe_pb2.SolverParameter.SGD: "SGD", caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
                 caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad", caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
                 caffe_pb2.SolverParameter.ADADELTA: "AdaDelta", caffe_pb2.SolverParameter.ADAM: "Adam"}


def solver_type(param: caffe_pb2.SolverParameter) -> str:
    """`type` (or the legacy enum `solver_type`), case as Caffe's registry spells it."""
    name = param.type if param.HasField("type") or not param.HasField("solver_type") else _LEGACY_TYPES[param.solver_type]
    for known in SOLVER_TYPES:
        if name.lower() == known.lower():
            return known
    raise CaffessdError(f"solver type '{name}' is not one of {', '.join(SOLVER_TYPES)}")


class LearningRate:
    """SGDSolver::GetLearningRate, with multistep's current_step kept as state."""

    def __init__(self, param: caffe_pb2.SolverParameter, current_step: int = 0):
        self.param = param
        self.current_step = current_step
        if param.lr_policy not in LR_POLICIES:
            raise CaffessdError(f"lr_policy '{param.lr_policy}' is not one of {', '.join(LR_POLICIES)}")
        if param.lr_policy == "step" and param.stepsize <= 0:
            raise CaffessdError("lr_policy step needs a positive stepsize")

    def __call__(self, iteration: int) -> float:
        p, policy = self.param, self.param.lr_policy
        base = p.base_lr
        if policy == "fixed":
            return base
        if policy == "step":
            self.current_step = iteration // p.stepsize
            return base * p.gamma ** self.current_step
        if policy == "exp":
            return base * p.gamma ** iteration
        if policy == "inv":
            return base * (1 + p.gamma * iteration) ** (-p.power)
        if policy == "multistep":
            if self.current_step < len(p.stepvalue) and iteration >= p.stepvalue[self.current_step]:
                self.current_step += 1
            return base * p.gamma ** self.current_step
        if policy == "poly":
            return base * (1 - iteration / p.max_iter) ** p.power
        return base * (1 / (1 + math.exp(-p.gamma * (iteration - p.stepsize))))


class Solver:
    """Histories and the update rule of one Caffe solver over a ParamStore's params."""

    def __init__(self, param: caffe_pb2.SolverParameter, params, compiled: bool = True, jit: bool = False):
        tf = tensorflow()
        self.tf = tf
        self.param = param
        self.type = solver_type(param)
        self.params = list(params)                       # every learnable blob, Caffe order
        self.trainable = [p for p in self.params if p.trainable]
        self.lr = LearningRate(param)
        self.iter = 0
        copies = 2 if self.type in ("AdaDelta", "Adam") else 1
        self.history = [tf.Variable(tf.zeros_like(p.variable), trainable=False)
                        for _ in range(copies) for p in self.params]
        self.regularization = param.regularization_type or "L2"
        if self.regularization not in ("L1", "L2"):
            raise CaffessdError(f"regularization_type '{self.regularization}' is not L1 or L2")
        self._index = {id(p): i for i, p in enumerate(self.params)}
        # jit: one XLA program for all the blobs' element-wise updates instead of ~15 small ops each.
        self._update = (tf.function(self._apply, reduce_retracing=True, jit_compile=jit or None, autograph=False)
                        if compiled else self._apply)

    # ------------------------------------------------------------ one update

    def step(self, grads: List[object], rate: Optional[float] = None) -> float:
        """Apply summed gradients of the trainable params (order of `self.trainable`) at `self.iter`."""
        rate, *inputs = self.next_update(rate)
        self._update(list(grads), *inputs)
        self.iter += 1
        return rate

    def next_update(self, rate: Optional[float] = None):
        """(rate, the rate tensor, the 1-based count tensor) of the update at `self.iter`:
        what the update's ops take. The rate is the lr policy's unless given."""
        rate = self.lr(self.iter) if rate is None else rate
        return rate, self.tf.constant(rate, self.tf.float32), self.tf.constant(self.iter + 1, self.tf.float32)

    def apply_in_graph(self, grads: List[object], rate, t) -> None:
        """The update's ops inside a caller's tf.function (the trainer's fused step),
        from next_update's tensors; the caller then advances `iter`."""
        self._apply(list(grads), rate, t)

    def _apply(self, grads, rate, t):
        tf, p = self.tf, self.param
        iter_size = float(max(1, p.iter_size))
        if p.clip_gradients >= 0:
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
            scale = tf.where(norm > p.clip_gradients, p.clip_gradients / norm, 1.0)
            grads = [g * scale for g in grads]
        n = len(self.params)
        rates = {}  # one local rate per distinct lr_mult (the same product for every blob)
        for param, g in zip(self.trainable, grads):
            w = param.variable
            if iter_size != 1:
                g = g / iter_size
            decay = p.weight_decay * param.decay_mult
            if decay:
                g = g + decay * (w if self.regularization == "L2" else tf.sign(w))
            if param.lr_mult not in rates:
                rates[param.lr_mult] = rate * param.lr_mult
            local = rates[param.lr_mult]
            i = self._index[id(param)]
            h = self.history[i]
            if self.type == "SGD":
                h.assign(p.momentum * h + local * g)
                update = h
            elif self.type == "Nesterov":
                previous = tf.identity(h)
                h.assign(p.momentum * h + local * g)
                update = (1 + p.momentum) * h - p.momentum * previous
            elif self.type == "AdaGrad":
                h.assign(h + g * g)
                update = local * g / (tf.sqrt(h) + p.delta)
            elif self.type == "RMSProp":
                h.assign(p.rms_decay * h + (1 - p.rms_decay) * g * g)
                update = local * g / (tf.sqrt(h) + p.delta)
            elif self.type == "AdaDelta":
                h2 = self.history[n + i]
                h.assign(p.momentum * h + (1 - p.momentum) * g * g)
                step = g * tf.sqrt((h2 + p.delta) / (h + p.delta))
                h2.assign(p.momentum * h2 + (1 - p.momentum) * step * step)
                update = local * step
            else:  # Adam
                v = self.history[n + i]
                h.assign(p.momentum * h + (1 - p.momentum) * g)
                v.assign(p.momentum2 * v + (1 - p.momentum2) * g * g)
                correction = tf.sqrt(1 - tf.pow(p.momentum2, t)) / (1 - tf.pow(p.momentum, t))
                update = local * correction * h / (tf.sqrt(v) + p.delta)
            w.assign_sub(update)

    # ------------------------------------------------------------ state

    def state(self) -> caffe_pb2.SolverState:
        state = caffe_pb2.SolverState(iter=self.iter, current_step=self.lr.current_step)
        for h, param in zip(self.history, self._history_params()):
            protoio.array_to_blob(param.layout.to_caffe(h.numpy()), state.history.add())
        return state

    def _history_params(self):
        """The blob of each history variable (Caffe's order: every blob, then the second copies)."""
        return [self.params[k % len(self.params)] for k in range(len(self.history))]

    def restore(self, state: caffe_pb2.SolverState, source: str = "solverstate") -> None:
        if len(state.history) != len(self.history):
            raise FormatError(source, f"has {len(state.history)} history blobs, this solver and net need "
                                      f"{len(self.history)}")
        for i, (h, blob, param) in enumerate(zip(self.history, state.history, self._history_params())):
            array = protoio.blob_to_array(blob)
            if array.size != int(np.prod(h.shape)):
                raise FormatError(source, f"history blob {i} has {array.size} values, the net's blob has "
                                          f"{int(np.prod(h.shape))}")
            h.assign(param.layout.to_stored(array))
        self.iter = state.iter
        self.lr.current_step = state.current_step
