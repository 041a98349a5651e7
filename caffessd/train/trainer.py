"""Trainer: Caffe's Solver::Solve loop for a SOLVER.prototxt, on TensorFlow.

    trainer = Trainer("solver_train.prototxt", input_fn=build_input)
    trainer.load_weights("init.caffemodel")        # by layer name; .missing, .skipped layers
    trainer.solve()                                 # test, display, snapshot as the solver says

Order of one iteration (Solver::Step): test when iter % test_interval == 0
(iter 0 only with test_initialization), iter_size forward/backward passes
with BatchNorm statistics updated at each, smoothed loss over average_loss,
display, the solver update, ++iter, snapshot when iter % snapshot == 0.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from caffessd import caffe_pb2, protoio
from caffessd.errors import CaffessdError, FormatError
from caffessd.net import Net, filter_phase
from caffessd.train import devices, inputs, precision, snapshot, summaries
from caffessd.train.bnstats import BatchNormRecompute
from caffessd.train.executor import ParamStore, TFNet, initial_weights
from caffessd.train.solver import Solver
from caffessd.train.tfimport import tensorflow
from caffessd.util.files import atomic_write
from caffessd.util.progress import Progress
from caffessd.eval.voc import voc_evaluate


class NonFiniteLoss(CaffessdError):
    """Training stopped at the first non-finite loss or gradient."""


@dataclass
class LoadedWeights:
    """What Trainer.load_weights did: layers given the file's blobs, layers the file
    lacks, and layers whose blobs did not fit (skip_mismatched), all keeping their fillers."""

    loaded: List[str]
    missing: List[str]
    skipped: List[snapshot.Mismatch]

    def summary(self) -> List[str]:
        """Lines for the log: one per skipped layer, with the file's and the net's blob shapes."""
        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} layer(s) missing from the file keep their fillers: "
                         f"{', '.join(self.missing)}")
        if self.skipped:
            lines.append(f"{len(self.skipped)} layer(s) with other blob shapes keep their fillers:")
            lines.extend(f"  {m.describe()}" for m in self.skipped)
        return lines


def _resolve(path: str, solver_path: Path) -> Path:
    """Caffe opens solver paths relative to the working directory; fall back to the solver's folder."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    beside = solver_path.parent / candidate
    return beside if beside.exists() else candidate


def read_solver(path) -> caffe_pb2.SolverParameter:
    return protoio.read_prototxt(path, caffe_pb2.SolverParameter)


class Trainer:
    """One solver, its train and test nets sharing blobs by layer name, and the loop."""

    def __init__(self, solver, *, input_fn: Optional[Callable] = None, root=None,
                 log: Optional[Callable[[str], None]] = None, progress: bool = True,
                 shard=(0, 1), compiled: bool = True, strategy=None, mixed_precision: bool = False,
                 empty_image_negatives: int = 0, xla: bool = False, tensorboard=True, bn_recompute: int = 0):
        self.tf = tf = tensorflow()
        self.solver_path = Path(solver) if not isinstance(solver, caffe_pb2.SolverParameter) else Path("solver.prototxt")
        self.param = solver if isinstance(solver, caffe_pb2.SolverParameter) else read_solver(solver)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.show_progress = progress
        self.input_fn = input_fn or inputs.build_input
        self.root = root
        self.shard = shard
        # Not the fork's: hard negatives from images without objects (multibox.empty_image_negatives).
        self.empty_image_negatives = int(empty_image_negatives)
        self.seed = int(self.param.random_seed) if self.param.random_seed >= 0 else 0
        tf.random.set_seed(self.seed)
        # Mixed precision: float16 layers, float32 blobs/solver/snapshots, a dynamic loss scale.
        self.compute_dtype = tf.float16 if mixed_precision else None
        self.loss_scale = precision.DynamicLossScale() if mixed_precision else None
        # Under a tf.distribute strategy every variable (blobs, histories) is mirrored.
        self.strategy = strategy
        # With several workers only the chief logs and writes files (every worker
        # holds the same weights after each step).
        self.chief = devices.is_chief(strategy)
        # TensorBoard event files: True beside the snapshots, a folder, or False for none.
        self.tensorboard = tensorboard
        self._summaries: Optional[summaries.TrainingSummaries] = None
        self._test_samples: List[summaries.TestSample] = []
        self.xla = xla
        if xla and not compiled:
            raise CaffessdError("XLA compiles the step: it needs compiled=True")
        if xla and strategy is not None and strategy.num_replicas_in_sync > 1:
            raise CaffessdError("--xla trains on one device; leave it out with several GPUs or workers")
        if not self.chief:
            self.log = lambda line: None
            self.show_progress = False
        if bn_recompute and strategy is not None and strategy.num_replicas_in_sync > 1:
            raise CaffessdError("--bn-recompute runs on one device; leave it out with several GPUs or workers")
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            self._build(input_fn, compiled)
        # Not Caffe's: BatchNorm statistics recomputed at the weights of each test and
        # snapshot over this many training batches (caffessd.train.bnstats); 0: Caffe's.
        self.bn_recompute = BatchNormRecompute(tf, self.train_net, self.store, bn_recompute,
                                               lambda: self._next_batch()[0], self.compute_dtype,
                                               compiled) if bn_recompute else None
        self._statistics_fresh_at: Optional[int] = None

    def _build(self, input_fn, compiled):
        tf = self.tf
        train_param, train_source = self._train_net_param()
        self.train_param = train_param
        initial = initial_weights(train_param, seed=self.seed)
        self.store = ParamStore()
        self.train_net = TFNet(train_param, "TRAIN", self.store, initial=initial, source=train_source)
        self.train_net.options["empty_image_negatives"] = self.empty_image_negatives
        self.test_nets = []
        for param, source in self._test_net_params():
            extra = initial_weights(param, seed=self.seed, phase="TEST")
            self.test_nets.append(TFNet(param, "TEST", self.store, initial=extra, source=source))
        if not self.train_net.data_layers or len(self.train_net.data_layers[0].layer.top) < 2:
            raise FormatError(train_source, "the train net needs an AnnotatedData layer with data and label tops")
        self.solver = Solver(self.param, self.store.params, compiled=compiled, jit=self.xla)
        self.trainable = [p.variable for p in self.solver.trainable]
        self.history: Dict[str, List] = {"iter": [], "loss": [], "test_iter": [], "map": []}
        self._losses: List[float] = []
        self.smoothed_loss = 0.0
        # compiled=False runs eagerly: same arithmetic, no tracing (quicker for a few steps).
        if self.strategy is not None:
            def step(images, gt, scale):
                return self.strategy.run(self._forward_backward, args=(images, gt, scale))
        else:
            step = self._forward_backward
        # autograph=False: the executor's Python control flow decides on layer types and
        # shapes, never on tensor values, so AutoGraph's source rewriting (most of the
        # first step's tracing time) would buy nothing.
        self._step_fn = tf.function(step, reduce_retracing=True, autograph=False) if compiled else step
        # One call for forward, backward and update where nothing needs Python between them.
        self._fused_fn = (tf.function(self._forward_backward_update, reduce_retracing=True, autograph=False)
                          if compiled and self.strategy is None and not self.xla and self.loss_scale is None
                          and max(1, self.param.iter_size) == 1 else None)
        self._stat_variables: List = []
        self._xla_body = (tf.function(self._body, jit_compile=True, reduce_retracing=True, autograph=False)
                          if self.xla else None)
        self._batches = None
        self.last_snapshot: Optional[Path] = None
        self.checked_matches = False
        self.last_parts: Dict[str, float] = {}

    # ------------------------------------------------------------ nets

    def _train_net_param(self):
        p = self.param
        if p.HasField("train_net_param"):
            return p.train_net_param, "train_net_param"
        if p.train_net:
            path = _resolve(p.train_net, self.solver_path)
            return protoio.read_net(path, binary_ok=False), str(path)
        if p.HasField("net_param"):
            return p.net_param, "net_param"
        if p.net:
            path = _resolve(p.net, self.solver_path)
            return protoio.read_net(path, binary_ok=False), str(path)
        raise FormatError(self.solver_path, "names no train_net or net")

    def _test_net_params(self):
        p = self.param
        nets = [(param, "test_net_param") for param in p.test_net_param]
        for name in p.test_net:
            path = _resolve(name, self.solver_path)
            nets.append((protoio.read_net(path, binary_ok=False), str(path)))
        if not nets and (p.net or p.HasField("net_param")) and p.test_iter:
            nets.append(self._train_net_param())
        if len(p.test_iter) < len(nets) and p.test_interval:
            raise FormatError(self.solver_path, f"has {len(nets)} test net(s) but {len(p.test_iter)} test_iter value(s)")
        return nets

    # ------------------------------------------------------------ weights and state

    def load_weights(self, path, skip_mismatched: bool = False) -> "LoadedWeights":
        """--weights: blobs by layer name. Layers the file lacks keep their fillers
        (`.missing`); a layer whose blobs have other shapes is an error naming the layer,
        or with skip_mismatched keeps its fillers too (`.skipped`: e.g. the class heads
        when fine-tuning weights trained for another number of classes)."""
        model = protoio.read_caffemodel(path)
        expected = self.store.caffe_shapes()
        found, missing, mismatched = snapshot.weights_by_name(model, expected, os.fspath(path),
                                                              skip_mismatched=skip_mismatched)
        self.store.assign(found)
        return LoadedWeights(loaded=sorted(found), missing=missing, skipped=mismatched)

    def resume(self, state_path) -> None:
        """--resume X.solverstate: the weights of its learned_net (or the .caffemodel beside it) and the history."""
        state = snapshot.read_solverstate(state_path)
        model_path = Path(state.learned_net) if state.learned_net else Path(state_path).with_suffix(".caffemodel")
        if not model_path.exists():
            model_path = Path(state_path).with_suffix(".caffemodel")
        if not model_path.exists():
            raise FormatError(state_path, f"names weights {state.learned_net or model_path} that do not exist")
        missing = self.load_weights(model_path).missing
        if missing:
            raise FormatError(model_path, f"lacks the layer(s) {', '.join(missing[:5])} of the train net")
        self.solver.restore(state, os.fspath(state_path))

    @property
    def prefix(self) -> str:
        """snapshot_prefix (or the solver's path without .prototxt): snapshots, curves, TensorBoard."""
        return self.param.snapshot_prefix or str(self.solver_path.with_suffix(""))

    @property
    def tensorboard_dir(self) -> Optional[Path]:
        """Where the TensorBoard event files go: PREFIX_tensorboard/ unless given; None when off."""
        if self.tensorboard is False or self.tensorboard is None:
            return None
        if self.tensorboard is True:
            return Path(self.prefix + "_tensorboard")
        return Path(self.tensorboard)

    def _board(self) -> Optional[summaries.TrainingSummaries]:
        if self._summaries is None and self.chief and self.tensorboard_dir is not None:
            self._summaries = summaries.TrainingSummaries(self.tensorboard_dir)
        return self._summaries

    def fresh_batchnorm_statistics(self) -> None:
        """With --bn-recompute: the statistics of the current weights, once per iteration."""
        if self.bn_recompute is None or self._statistics_fresh_at == self.solver.iter:
            return
        self.log(f"Iteration {self.solver.iter}, BatchNorm statistics recomputed over "
                 f"{self.bn_recompute.batches} batches")
        self.bn_recompute()
        self._statistics_fresh_at = self.solver.iter

    def write_snapshot(self):
        if not self.chief:
            return None, None
        self.fresh_batchnorm_statistics()
        prefix = self.prefix
        model_path, state_path = snapshot.snapshot_paths(prefix, self.solver.iter)
        self.log(f"Snapshotting to binary proto file {model_path}")
        snapshot.write_snapshot(prefix, self.solver.iter, self.train_param, self.store.arrays(), self.solver.state())
        self.log(f"Snapshotting solver state to binary proto file {state_path}")
        self.last_snapshot = model_path
        return model_path, state_path

    # ------------------------------------------------------------ one pass

    def _body(self, images):
        """The train net up to its loss layers (XLA compiles this; the losses' matching
        runs in numpy outside it): the loss layers' inputs and the BatchNorm updates."""
        data = self.train_net.data_layers[0].layer
        ctx = self.train_net.forward({data.top[0]: images}, training=True, update_stats=True,
                                     compute_dtype=self.compute_dtype, part="body")
        self._stat_variables = [var for var, _ in ctx.stat_updates]  # the same order at every trace
        return [ctx.get(blob) for blob in self.train_net.loss_inputs()], [value for _, value in ctx.stat_updates]

    def _train_forward(self, images, gt):
        data = self.train_net.data_layers[0].layer
        feeds = {data.top[0]: images, data.top[1]: gt}
        if self._xla_body is None:
            return self.train_net.forward(feeds, training=True, update_stats=True, compute_dtype=self.compute_dtype)
        blobs, stats = self._xla_body(images)
        feeds.update(zip(self.train_net.loss_inputs(), blobs))
        ctx = self.train_net.forward(feeds, training=True, compute_dtype=self.compute_dtype, part="losses")
        ctx.stat_updates = list(zip(self._stat_variables, stats))
        return ctx

    def _forward_backward(self, images, gt, scale):
        tf = self.tf
        with tf.GradientTape() as tape:
            ctx = self._train_forward(images, gt)
            if not ctx.losses:
                raise CaffessdError("the train net has no loss layer")
            loss = tf.add_n(list(ctx.losses.values()))
            scaled = loss * tf.cast(scale, loss.dtype)  # scale is 1 (exact) without mixed precision
        grads = tape.gradient(scaled, self.trainable)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) / tf.cast(scale, v.dtype)
                 for g, v in zip(grads, self.trainable)]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(x)) for x in [loss] + grads])
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # Every replica (and worker) must agree: all update, or all retry/stop.
            failed = replica.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
            finite = failed == 0
        # BatchNorm running sums move only when the pass was finite (a failed
        # iteration leaves the last good state behind).
        for var, value in ctx.stat_updates:
            var.assign(tf.where(finite, value, var))
        matches = [aux["num_matches"] for aux in ctx.aux.values()]
        outputs = {top: value for top, value in ctx.losses.items()}
        # The loss in its localisation and confidence terms, summed over loss layers (TensorBoard).
        parts = {key: tf.add_n([aux[key] for aux in ctx.aux.values()]) for key in ("loc", "conf")
                 if ctx.aux and all(key in aux for aux in ctx.aux.values())}
        return loss, grads, finite, matches, outputs, parts

    def _forward_backward_update(self, images, gt, scale, rate, t):
        """_forward_backward and the solver's update in one graph, the update only when
        the pass was finite, so the cores do not wait for Python between two calls
        (docs/train.md). The finiteness of every gradient gates the update, so it
        starts once the whole backward pass is done."""
        tf = self.tf
        loss, grads, finite, matches, outputs, parts = self._forward_backward(images, gt, scale)

        def update():
            self.solver.apply_in_graph(grads, rate, t)
            return tf.constant(True)
        tf.cond(finite, update, lambda: tf.constant(False))
        return loss, finite, matches, outputs, parts

    def train_iteration(self):
        """One iteration with its update: (loss, the train net's outputs, the rate used).
        The fused step where it applies (one device, float32, no XLA, iter_size 1), else
        iteration() then solver.step()."""
        if self._fused_fn is None:
            loss, outputs, grads = self.iteration()
            return loss, outputs, self.solver.step(grads)
        tf = self.tf
        images, gt = self._next_batch()
        rate, *update = self.solver.next_update()
        inputs = (images, gt, tf.constant(1.0, tf.float32), *update)
        self._trace_for_any_box_count(self._fused_fn, *inputs)
        loss, finite, matches, outs, parts = self._fused_fn(*inputs)
        if not bool(finite):
            self._fail_non_finite(images, gt, float(loss))  # the update did not run
        self.solver.iter += 1
        if not self.checked_matches:
            self._check_matches(gt, matches)
        self._last_batch = int(images.shape[0])
        self.last_parts = {key: float(value) for key, value in parts.items()}
        return float(loss), {top: float(value) for top, value in outs.items()}, rate

    def _next_batch(self):
        from caffessd.train.data import input_errors

        with input_errors(self.train_net.data_layers[0].layer, self.root):
            if self._batches is None:
                self._batches = iter(self._dataset())
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = iter(self._dataset())
                return next(self._batches)

    def _dataset(self):
        layer = self.train_net.data_layers[0].layer
        return self.input_fn(layer, "TRAIN", seed=self.seed, shard=self.shard, root=self.root)

    def iteration(self):
        """iter_size forward/backward passes (the update is the caller's: solver.step);
        returns (loss, the train net's outputs, summed gradients). The loss's
        localisation/confidence terms are left in self.last_parts."""
        tf = self.tf
        iter_size = max(1, self.param.iter_size)
        total, accumulated, outputs, loss_parts = 0.0, None, {}, {}
        for _ in range(iter_size):
            images, gt = self._next_batch()
            while True:
                scale = tf.constant(self.loss_scale.value if self.loss_scale else 1.0, tf.float32)
                if self.strategy is None:
                    self._trace_for_any_box_count(self._step_fn, images, gt, scale)
                    loss, grads, finite, matches, outs, parts = self._step_fn(images, gt, scale)
                else:
                    loss, grads, finite, matches, outs, parts = self._replicated_step(images, gt, scale)
                if bool(finite) or not (self.loss_scale and self.loss_scale.can_shrink()):
                    break
                self.loss_scale.shrink()  # float16 gradients overflowed: the same batch, a smaller scale
            if not bool(finite):
                self._fail_non_finite(images, gt, float(loss))
            if self.loss_scale:
                self.loss_scale.finite_step()
            if not self.checked_matches:
                self._check_matches(gt, matches)
            total += float(loss)
            for top, value in outs.items():
                outputs[top] = outputs.get(top, 0.0) + float(value) / iter_size
            for key, value in parts.items():
                loss_parts[key] = loss_parts.get(key, 0.0) + float(value) / iter_size
            accumulated = grads if accumulated is None else [a + g for a, g in zip(accumulated, grads)]
        self._last_batch = int(images.shape[0]) * iter_size
        self.last_parts = loss_parts
        return total / iter_size, outputs, accumulated

    def _trace_for_any_box_count(self, step_fn, images, gt, *rest):
        """Trace `step_fn` once for any number of ground-truth rows: the count changes from
        batch to batch, and a trace for the first batch's count would be traced again at
        the second (seconds each). Eager steps (compiled=False) trace nothing."""
        tf = self.tf
        if not isinstance(step_fn, tf.types.experimental.PolymorphicFunction) or \
                step_fn.experimental_get_tracing_count():
            return
        rows = tf.TensorSpec([None, *gt.shape[1:]], gt.dtype)
        step_fn.get_concrete_function(tf.TensorSpec(images.shape, images.dtype), rows, *rest)

    def _replicated_step(self, images, gt, scale):
        """The global batch split over the strategy's replicas (gt rows renumbered per
        slice), one step on each, losses and gradients summed: MultiBoxLoss and
        BatchNorm use whole-batch counts and statistics, so this equals one device."""
        tf, strategy = self.tf, self.strategy
        count = strategy.num_replicas_in_sync
        images = np.asarray(images)
        rows = np.asarray(gt).reshape(-1, 8)
        if images.shape[0] % count:
            raise CaffessdError(f"batch {images.shape[0]} does not split evenly over {count} replicas")
        per = images.shape[0] // count
        parts = []
        for r in range(count):
            mine = rows[(rows[:, 0] >= r * per) & (rows[:, 0] < (r + 1) * per)].copy()
            mine[:, 0] -= r * per
            parts.append((images[r * per:(r + 1) * per], mine))
        image_values = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group][0]))
        gt_values = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group][1]))
        loss, grads, finite, matches, outs, parts = self._step_fn(image_values, gt_values, scale)
        total = lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)  # noqa: E731
        finite = all(bool(f) for f in strategy.experimental_local_results(finite))
        matches = [total(m) for m in matches]
        return (total(loss), [total(g) for g in grads], finite, matches, {k: total(v) for k, v in outs.items()},
                {k: total(v) for k, v in parts.items()})

    # ------------------------------------------------------------ failing loudly

    def _fail_non_finite(self, images, gt, loss):
        data = self.train_net.data_layers[0].layer
        ctx = self.train_net.forward({data.top[0]: images, data.top[1]: gt}, training=True,
                                     compute_dtype=self.compute_dtype)
        culprit = "the gradients (every layer output was finite)"
        for info in self.train_net.infos:
            for tensor in ctx.layer_outputs.get(info.name, []):
                if tensor is not None and not bool(self.tf.reduce_all(self.tf.math.is_finite(tensor[0]))):
                    culprit = f"layer '{info.name}' ({info.type})"
                    break
            else:
                continue
            break
        kept = f"; last good snapshot {self.last_snapshot}" if self.last_snapshot else ""
        raise NonFiniteLoss(f"iteration {self.solver.iter}: loss is {loss}; first non-finite output: {culprit}. "
                            f"Usual causes: learning rate too high (base_lr {self.param.base_lr:g}), input not "
                            f"normalised (transform_param scale/mean_value), ground-truth boxes outside the image{kept}")

    def _check_matches(self, gt, matches):
        self.checked_matches = True
        rows = np.asarray(gt).reshape(-1, 8)
        rows = rows[rows[:, 0] >= 0]
        if not len(rows) or not matches or int(matches[0]) > 0:
            return
        widths = rows[:, 5] - rows[:, 3]
        heights = rows[:, 6] - rows[:, 4]
        image = self.train_net.image_shape
        priors = self._prior_sizes()
        self.log(f"Warning: iteration {self.solver.iter + 1}: none of the {len(rows)} ground-truth boxes matches a "
                 f"prior (the loss will stay near 0): boxes are {widths.min() * image[3]:.0f}-{widths.max() * image[3]:.0f} x "
                 f"{heights.min() * image[2]:.0f}-{heights.max() * image[2]:.0f} px, priors {priors} "
                 f"(box coordinates must be normalised to 0..1 and overlap the image)")

    def _prior_sizes(self) -> str:
        sizes = []
        for info in self.train_net.infos:
            if info.type == "PriorBox":
                p = info.layer.prior_box_param
                sizes.extend(list(p.min_size) + list(p.max_size))
        return f"{min(sizes):.0f}-{max(sizes):.0f} px" if sizes else "none"

    # ------------------------------------------------------------ the loop

    def _smooth(self, loss: float, start_iter: int):
        average = max(1, self.param.average_loss)
        if len(self._losses) < average:
            self._losses.append(loss)
            self.smoothed_loss = (self.smoothed_loss * (len(self._losses) - 1) + loss) / len(self._losses)
        else:
            index = (self.solver.iter - start_iter) % average
            self.smoothed_loss += (loss - self._losses[index]) / average
            self._losses[index] = loss

    def solve(self, max_iter: Optional[int] = None) -> float:
        """Run until max_iter (the solver's unless given); returns the last smoothed loss."""
        p = self.param
        stop = p.max_iter if max_iter is None else max_iter
        start = self.solver.iter
        self.log(f"Solving {self.train_param.name or 'net'} from iteration {start} to {stop}")
        batch = self.train_net.image_shape[0] * max(1, p.iter_size)
        self._board()  # a missing TensorBoard is reported before the first iteration
        try:
            self._loop(start, stop, batch)
        finally:
            if self._summaries is not None:
                self._summaries.close()
                self._summaries = None
        self.log("Optimization Done.")
        return self.smoothed_loss

    def _loop(self, start: int, stop: int, batch: int) -> None:
        p = self.param
        board = self._board()
        with Progress((stop - start) * batch, "train", unit="img", enabled=self.show_progress) as bar:
            while self.solver.iter < stop:
                it = self.solver.iter
                if p.test_interval and it % p.test_interval == 0 and (it > 0 or p.test_initialization):
                    self.test_all()
                loss, outputs, rate = self.train_iteration()
                self._smooth(loss, start)
                if p.display and it % p.display == 0:
                    self.log(f"Iteration {it}, loss = {self.smoothed_loss:.6g}")
                    for k, (top, value) in enumerate(outputs.items()):
                        self.log(f"    Train net output #{k}: {top} = {value:.6g}")
                    self.log(f"Iteration {it}, lr = {rate:.6g}")
                if board is not None:
                    board.iteration(it, self.smoothed_loss, outputs, self.last_parts, rate)
                self.history["iter"].append(it)
                self.history["loss"].append(self.smoothed_loss)
                bar.update(self._last_batch, extra=f"iter {self.solver.iter}, loss {self.smoothed_loss:.4g}")
                if p.snapshot and self.solver.iter % p.snapshot == 0:
                    self.write_snapshot()
        if p.snapshot_after_train and self.solver.iter > start and (not p.snapshot or self.solver.iter % p.snapshot):
            self.write_snapshot()
        # Caffe's Solve() tests once more at the end whenever the interval divides the
        # iteration, even when no step ran: that is how test.sh (max_iter 0) evaluates.
        if p.test_interval and self.solver.iter % p.test_interval == 0 and self.test_nets:
            self.test_all()

    # ------------------------------------------------------------ testing

    def test_all(self) -> List[float]:
        results = []
        if not self.chief:
            return results
        if self.test_nets:
            self.fresh_batchnorm_statistics()
        for k, net in enumerate(self.test_nets):
            self.log(f"Iteration {self.solver.iter}, Testing net (#{k})")
            value = self.test(k)
            self.log(f"    Test net output #0: detection_eval = {value:.6g}")
            results.append(value)
            board = self._board()
            if board is not None:
                board.test(self.solver.iter, k, value)
                if k == 0:
                    self._board_images(board, net)
        if results:
            self.history["test_iter"].append(self.solver.iter)
            self.history["map"].append(results[0])
            self.plot()
        return results

    def test(self, index: int = 0) -> float:
        """mAP of test net `index` over test_iter batches: DetectionOutput through the ONNX
        path (onnxruntime) on the current weights, then Caffe's AP."""
        from caffessd import inference, onnxconv

        net = self.test_nets[index]
        param = filter_phase(net.param, "TEST")
        weights = {name: arrays for name, arrays in self.store.arrays().items()}
        model = onnxconv.to_onnx(Net(param, weights=weights))
        session = inference.onnx_session(model)
        data = net.data_layers[0].layer
        dataset = iter(self.input_fn(data, "TEST", seed=self.seed, shard=(0, 1), root=self.root))
        evaluate = next((i.layer for i in net.infos if i.type == "DetectionEvaluate"), None)
        detection = next((i.layer for i in net.infos if i.type == "DetectionOutput"), None)
        if detection is None:
            raise CaffessdError("the test net has no DetectionOutput layer to evaluate")
        num_classes = detection.detection_output_param.num_classes
        detections, truth, offset = {}, {}, 0
        if index == 0:
            self._test_samples = []
        steps = self.param.test_iter[index] if len(self.param.test_iter) > index else 1
        input_name = session.get_inputs()[0].name
        from caffessd.train.data import input_errors

        for _ in range(steps):
            try:
                with input_errors(data, self.root):
                    images, gt = next(dataset)
            except StopIteration:
                break
            images = np.asarray(images, np.float32)
            count = images.shape[0]
            rows = inference.run_onnx(session, {input_name: _pad_batch(images, session.get_inputs()[0].shape)})
            out = next(iter(rows.values())).reshape(-1, 7)
            for image in range(offset, offset + count):
                truth[image] = []  # an image without boxes still counts its detections as false
            # Classes are the label ids; caffessd.eval scores them as the fork's DetectionEvaluate does.
            for row in out:
                if row[2] > 0 and 0 <= row[0] < count:
                    detections.setdefault(offset + int(row[0]), []).append((str(int(row[1])), float(row[2]), row[3:7]))
            gt_rows = np.asarray(gt).reshape(-1, 8)
            for row in gt_rows:
                if row[0] >= 0:
                    truth[offset + int(row[0])].append((str(int(row[1])), row[3:7], bool(row[7])))
            self._keep_samples(index, offset, images, out, gt_rows)
            offset += count
        evaluate_param = evaluate.detection_evaluate_param if evaluate is not None else caffe_pb2.DetectionEvaluateParameter()
        background = detection.detection_output_param.background_label_id
        classes = [str(label) for label in range(num_classes) if label != background]
        return voc_evaluate(detections, truth, classes, iou_threshold=evaluate_param.overlap_threshold,
                            ap_version=self.param.ap_version or "Integral",
                            evaluate_difficult=evaluate_param.evaluate_difficult_gt).mean_ap

    def _keep_samples(self, index, offset, images, rows, gt_rows) -> None:
        """The first test images of net #0 with their detections, for TensorBoard."""
        if index != 0 or self.tensorboard_dir is None:
            return
        for i in range(max(0, min(len(images), summaries.TEST_IMAGES - offset))):
            self._test_samples.append(summaries.TestSample(images[i], rows[rows[:, 0] == i], gt_rows[gt_rows[:, 0] == i]))

    def _board_images(self, board, net) -> None:
        from caffessd.train.data import parse_layer

        transform = parse_layer(net.data_layers[0].layer, "TEST").transform
        detection = next((i.layer for i in net.infos if i.type == "DetectionOutput"), None)
        names = None
        label_map = detection.detection_output_param.save_output_param.label_map_file if detection else ""
        if label_map and Path(label_map).is_file():
            names = protoio.labelmap_names(label_map)
        board.images(self.solver.iter, self._test_samples, transform.mean, transform.scale, names)

    def plot(self) -> Optional[Path]:
        """PNG of the smoothed training loss and the test mAP, beside the snapshots."""
        if not self.history["iter"] and not self.history["map"]:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        prefix = self.param.snapshot_prefix or str(self.solver_path.with_suffix(""))
        path = Path(prefix + "_curves.png")
        fig, loss_axis = plt.subplots(figsize=(7, 4))
        loss_axis.plot(self.history["iter"], self.history["loss"], color="tab:blue", label="train loss (smoothed)")
        loss_axis.set_xlabel("iteration")
        loss_axis.set_ylabel("loss")
        if self.history["map"]:
            map_axis = loss_axis.twinx()
            map_axis.plot(self.history["test_iter"], self.history["map"], "o-", color="tab:orange", label="test mAP")
            map_axis.set_ylabel("mAP")
            map_axis.set_ylim(0, 1)
        fig.tight_layout()
        import io

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        atomic_write(path, buffer.getvalue())
        return path


def _pad_batch(images: np.ndarray, input_shape) -> np.ndarray:
    """The TEST pipeline's last batch may be short (each image is scored once,
    where Caffe's reader would wrap around); the exported test net has a fixed
    batch, so pad with zero images whose detections are then ignored."""
    batch = input_shape[0] if input_shape else None
    if not isinstance(batch, int) or batch <= images.shape[0]:
        return images
    padding = np.zeros((batch - images.shape[0], *images.shape[1:]), images.dtype)
    return np.concatenate([images, padding])
