"""`caffessd quantize`: static int8 quantization of an exported ONNX detector."""
from __future__ import annotations

import click

from caffessd.util.lmdb_check import looks_like_lmdb
from caffessd.util.outputs import Input, check_outputs


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calibrate", required=True, type=click.Path(),
              help="folder of images or AnnotatedDatum LMDB (make-lmdb) to calibrate activations on")
@click.option("--images", type=click.IntRange(min=1), default=100, show_default=True,
              help="calibration images to use (the first N)")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="how activation ranges are chosen from the calibration data")
@click.option("--keep-float", default="", help="comma-separated layer or node names to leave in float")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="int8 ONNX file to write")
@click.option("--allow-outside-root", is_flag=True,
              help="calibrate on images that are links leading out of the --calibrate folder (refused by default)")
def command(model, calibrate, images, method, keep_float, output, allow_outside_root):
    """Quantize MODEL (from `caffessd export-onnx`) to int8 (QDQ, per-channel
    weights); PriorBox constants and DetectionOutput stay float, metadata carries over."""
    import logging

    from caffessd.inference.quantize import quantize_model

    check_outputs([("-o", output)], [Input("model", model), Input("calibration data", calibrate,
                                                                  sealed=looks_like_lmdb(calibrate))])
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" advice
    names = [name.strip() for name in keep_float.split(",") if name.strip()]
    report = quantize_model(model, calibrate, output, images=images, method=method, keep_float=names,
                            allow_outside=allow_outside_root)
    for line in report.lines():
        click.echo(line)
