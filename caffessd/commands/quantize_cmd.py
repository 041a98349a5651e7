"""`caffessd quantize`: static int8 quantization of an exported ONNX detector."""
from __future__ import annotations

import click


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
def command(model, calibrate, images, method, keep_float, output):
    """Quantize MODEL (from `caffessd export-onnx`) to int8 (QDQ, per-channel
    weights); PriorBox constants and DetectionOutput stay float, metadata carries over."""
    import logging

    from caffessd.inference.quantize import quantize_model

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" advice
    names = [name.strip() for name in keep_float.split(",") if name.strip()]
    report = quantize_model(model, calibrate, output, images=images, method=method, keep_float=names)
    for line in report.lines():
        click.echo(line)
