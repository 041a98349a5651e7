"""`caffessd train`: run a Caffe SOLVER.prototxt on TensorFlow (the `tf` extra).

A thin shell over caffessd.train.Trainer, which imports TensorFlow lazily.
"""
from __future__ import annotations

import click

from caffessd.errors import CaffessdError
from caffessd import caffe_pb2, protoio
from caffessd.train.datacheck import train_data_lines
from caffessd.train.devices import check_mixed_precision, training_strategy
from caffessd.train.sources import checked_source
from caffessd.train.snapshot import snapshot_paths
from caffessd.train.trainer import Trainer
from caffessd.util.outputs import Input, check_outputs


@click.command("train")
@click.argument("solver", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False),
              help="initial weights: a caffemodel matched by layer name (missing layers keep their fillers)")
@click.option("--skip-mismatched", is_flag=True,
              help="with --weights: layers whose blobs have other shapes (e.g. class heads for another number "
                   "of classes) keep their fillers and are listed, instead of an error")
@click.option("--resume", "resume", type=click.Path(dir_okay=False),
              help="continue from PREFIX_iter_N.solverstate (and its .caffemodel)")
@click.option("--gpus", default=None, metavar="LIST",
              help="GPU ids as Caffe takes them ('0', 'all'); default: a GPU when TensorFlow sees one, else CPU")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="folder that the data layers' relative LMDB sources are read from [default: current folder]")
@click.option("--mixed-precision", is_flag=True,
              help="float16 compute with float32 master weights and loss scaling (GPUs only)")
@click.option("--xla", is_flag=True,
              help="compile the net's forward/backward (up to the loss's matching) and the solver update with "
                   "XLA; for GPUs (on CPUs TensorFlow's XLA convolutions are slower, see docs/train.md)")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="TensorBoard event files: loss, its loc/conf parts, lr, test mAP, test images with boxes "
                   "[default: PREFIX_tensorboard beside the snapshots]")
@click.option("--no-tensorboard", is_flag=True, help="write no TensorBoard event files")
@click.option("--empty-image-negatives", default=0, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="each image without objects gives its N hardest priors as background examples (0: none, as the "
                   "SSD fork, whose mining follows an image's positives)")
@click.option("--bn-recompute", default=0, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="before each test and snapshot, recompute the BatchNorm statistics at the current weights "
                   "over N training batches, each weighed the same, instead of Caffe's running averages "
                   "(0: Caffe's); see docs/training-recipe.md")
@click.option("--lint/--no-lint", "lint_first", default=True, show_default=True,
              help="check the train LMDB first and print lint-dataset's summary")
@click.option("--progress/--no-progress", default=True, show_default=True, help="progress bar (images/s, ETA) on stderr")
@click.option("--allow-outside-root", is_flag=True,
              help="read data sources that leave the data root (a relative source with '..' or a link leading "
                   "out; with --data-root, also absolute ones); refused by default")
def command(solver, weights, skip_mismatched, resume, gpus, data_root, mixed_precision, empty_image_negatives,
            bn_recompute, lint_first, xla, tensorboard_dir, no_tensorboard, progress, allow_outside_root):
    """Train the solver's train_net (testing its test_net every test_interval)
    with Caffe's semantics; snapshots PREFIX_iter_N.caffemodel/.solverstate."""
    if weights and resume:
        raise CaffessdError("give --weights or --resume, not both (a solverstate brings its own weights)")
    if skip_mismatched and not weights:
        raise CaffessdError("--skip-mismatched goes with --weights")
    if tensorboard_dir and no_tensorboard:
        raise CaffessdError("give --tensorboard DIR or --no-tensorboard, not both")

    param = protoio.read_prototxt(solver, caffe_pb2.SolverParameter)  # a bad solver fails before TensorFlow loads

    # Before any TensorFlow op: TF_CONFIG -> MultiWorkerMirroredStrategy,
    # several --gpus -> MirroredStrategy, else one device.
    strategy = training_strategy(gpus)
    if mixed_precision:
        check_mixed_precision()
    tensorboard = False if no_tensorboard else (tensorboard_dir or True)
    trainer = Trainer(solver, root=data_root, progress=progress, strategy=strategy, mixed_precision=mixed_precision,
                      empty_image_negatives=empty_image_negatives, xla=xla, tensorboard=tensorboard,
                      bn_recompute=bn_recompute)
    del param
    sources = _data_sources(trainer, data_root, allow_outside_root)
    if resume:
        trainer.resume(resume)  # first: snapshots come after the state's iteration
    _refuse_overwriting_inputs(trainer, solver, weights, resume, sources)
    if lint_first and trainer.chief:
        for line in train_data_lines(trainer.train_net.data_layers[0].layer, data_root):
            trainer.log(line)
    if resume:
        click.echo(f"Resuming from {resume} at iteration {trainer.solver.iter}", err=True)
    elif weights:
        loaded = trainer.load_weights(weights, skip_mismatched=skip_mismatched)
        click.echo(f"Initialised from {weights}", err=True)
        for line in loaded.summary():
            click.echo(line, err=True)
    if trainer.tensorboard_dir is not None and trainer.chief:
        click.echo(f"TensorBoard: tensorboard --logdir {trainer.tensorboard_dir}", err=True)
    trainer.solve()


def _data_sources(trainer, data_root, allow_outside):
    """The LMDBs the train and test nets read, each inside the data root (or refused)."""
    from pathlib import Path

    root = Path(data_root) if data_root else None
    return [checked_source(info.layer, root, net.source, allow_outside)
            for net in [trainer.train_net, *trainer.test_nets] for info in net.data_layers]


def _refuse_overwriting_inputs(trainer, solver, weights, resume, sources) -> None:
    """Snapshots (PREFIX_iter_N.caffemodel/.solverstate, PREFIX_curves.png) must
    not replace the solver, a net, the initial weights, or land inside an LMDB
    being read (caffessd.util.outputs)."""
    from pathlib import Path

    p = trainer.param
    prefix = p.snapshot_prefix or str(trainer.solver_path.with_suffix(""))
    start = trainer.solver.iter  # snapshots come after it (a resumed run starts at its state's iteration)
    first = (start // p.snapshot + 1) * p.snapshot if p.snapshot > 0 else p.max_iter + 1
    steps = list(range(first, p.max_iter + 1, p.snapshot))[:10000] if p.snapshot > 0 else []
    steps += [p.max_iter] if p.max_iter > start else []
    outputs = [("the snapshot", path) for step in steps for path in snapshot_paths(prefix, step)]
    outputs.append(("the training curves", Path(prefix + "_curves.png")))
    inputs = [Input("solver", solver), Input("--weights", weights), Input("--resume", resume)]
    inputs += [Input("net", net.source) for net in [trainer.train_net, *trainer.test_nets]
               if net.source and Path(net.source).exists()]
    inputs += [Input("LMDB", source, sealed=True) for source in sources]
    check_outputs(outputs, inputs)
