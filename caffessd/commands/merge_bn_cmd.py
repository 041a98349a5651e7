"""`caffessd merge-bn`: fold BatchNorm/Scale into convolutions and prove it lossless."""
from __future__ import annotations

import sys
from pathlib import Path
from contextlib import contextmanager

import click

from caffessd.commands.options import max_memory_option
from caffessd.errors import CaffessdError
from caffessd.merge_bn import fold_batchnorm, output_paths, write_merged
from caffessd.net import Net
from caffessd.util.outputs import refuse_overwriting
from caffessd.util.files import check_writable
from caffessd.merge_bn import verify as merge_bn_verify


def _param_count(net: Net) -> int:
    return sum(int(w.size) for blobs in net.weights.values() for w in blobs)


@click.command("merge-bn")
@max_memory_option
@click.option("--model", "-m", "prototxt", required=True, type=click.Path(dir_okay=False),
              help="deploy prototxt")
@click.option("--weights", "-w", "caffemodel", required=True, type=click.Path(dir_okay=False),
              help="caffemodel (a snapshot of the train net is fine)")
@click.option("--output", "-o", "out_prefix", help="prefix of the merged files: PREFIX.prototxt, PREFIX.caffemodel")
@click.option("--prototxt-out", type=click.Path(dir_okay=False), help="merged prototxt path (overrides -o)")
@click.option("--caffemodel-out", type=click.Path(dir_okay=False), help="merged caffemodel path (overrides -o)")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="run both nets and compare every output before writing")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False),
              help="also compare on this image (repeatable)")
@click.option("--tolerance", default=1e-4, show_default=True, type=click.FloatRange(min=0),
              help="largest allowed difference, relative to each output's largest magnitude")
@click.option("--seed", default=0, show_default=True, help="seed of the random verification input")
def command(prototxt, caffemodel, out_prefix, prototxt_out, caffemodel_out, verify, images, tolerance, seed):
    """Fold BatchNorm and Scale layers into the preceding Convolution,
    Deconvolution or InnerProduct; write the merged deploy prototxt and
    caffemodel. Layers that cannot fold exactly are kept and listed."""
    if not out_prefix and not (prototxt_out and caffemodel_out):
        raise CaffessdError("give -o PREFIX (or both --prototxt-out and --caffemodel-out)")
    net = Net.load(prototxt, caffemodel, strict=True)
    prototxt_path, caffemodel_path = output_paths(out_prefix or "", prototxt_out, caffemodel_out,
                                                  net.name or Path(prototxt).stem)
    if prototxt_path.resolve() == caffemodel_path.resolve():
        raise CaffessdError(f"--prototxt-out and --caffemodel-out are the same file: {prototxt_path}")
    refuse_overwriting([("the merged prototxt", prototxt_path), ("the merged caffemodel", caffemodel_path)],
                       [("prototxt", prototxt), ("caffemodel", caffemodel)] + [("image", i) for i in images])
    for path in (prototxt_path, caffemodel_path):
        check_writable(path)  # before the (slow) verification, not after

    result = fold_batchnorm(net)
    merged = result.net()
    click.echo(f"folded {len(result.folded)} layer(s); kept {len(result.skipped)}")
    for skipped in result.skipped:
        click.echo(f"  kept {skipped}")
    click.echo(f"layers: {len(net.param.layer)} -> {len(merged.param.layer)}, "
               f"parameters: {_param_count(net):,} -> {_param_count(merged):,}")

    if verify:
        _verify(net, merged, images, tolerance, seed)
    write_merged(result, prototxt_path, caffemodel_path, source_prototxt=prototxt)
    click.echo(f"wrote {prototxt_path}")
    click.echo(f"wrote {caffemodel_path}")


def _verify(net: Net, merged: Net, images, tolerance: float, seed: int) -> None:
    runner = merge_bn_verify.default_runner()
    try:
        with _progress(1 + len(images)) as advance:
            rows = merge_bn_verify.verify_fold(net, merged, images=images, tolerance=tolerance, seed=seed,
                                               runner=runner, progress=advance)
    except merge_bn_verify.VerificationError as exc:
        _print_rows(exc.checks, tolerance)
        raise
    _print_rows(rows, tolerance)
    click.echo(f"verified with {_runner_name(runner)}: every output within {tolerance:g} relative")


@contextmanager
def _progress(runs: int):
    """A progress bar on a terminal; silence otherwise (stderr stays one error line)."""
    stream = sys.stderr
    if not stream.isatty():
        yield lambda label: None
        return
    with click.progressbar(length=runs, label="verifying", file=stream) as bar:
        yield lambda label: bar.update(1)


def _print_rows(rows, tolerance: float) -> None:
    for row in rows:
        flag = "" if row.passes(tolerance) else "  FAIL"
        click.echo(f"  {row.line()}{flag}")


def _runner_name(runner) -> str:
    return {"run_onnx_path": "caffessd's ONNX path (onnxruntime)",
            "run_opencv": "OpenCV cv2.dnn"}.get(runner.__name__, runner.__name__)
