"""`caffessd export-tflite`: a Caffe deploy net as a TFLite model (needs caffessd[tf])."""
from __future__ import annotations

import click

from caffessd.commands.export_options import export_metadata, net_arguments, preprocessing_options
from caffessd.commands.options import parse_size
from caffessd.util.outputs import check_outputs


@click.command("export-tflite")
@net_arguments
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="the .tflite file to write (NAME.caffessd.json is written beside it)")
@click.option("--fp16", "precision", flag_value="float16", help="float16 weights (half the file; float32 compute)")
@click.option("--int8", "precision", flag_value="int8",
              help="full integer quantization, calibrated on --calibrate images (float input and outputs)")
@click.option("--calibrate", type=click.Path(), help="folder of images or LMDB for --int8")
@click.option("--calibration-images", type=click.IntRange(min=1), default=100, show_default=True,
              help="at most this many calibration images")
@click.option("--nms", type=click.Choice(["regular", "fast"]), default="regular", show_default=True,
              help="TFLite_Detection_PostProcess NMS: per class as Caffe (regular), or class-agnostic (fast)")
@click.option("--candidates", type=click.Choice(["caffe", "all"]), default="caffe", show_default=True,
              help="regular NMS input: each class's top_k best scores as Caffe's DetectionOutput (a TopK in the "
                   "graph), or all scores above the threshold with top_k capping the survivors (the op's own way)")
@click.option("--raw", is_flag=True, help="no post-processing op: outputs loc, conf (after softmax) and priors")
@click.option("--input-size", help="convert for this input size instead of the prototxt's, WIDTHxHEIGHT")
@preprocessing_options
def command(prototxt, caffemodel, output, precision, calibrate, calibration_images, nms, candidates, raw, input_size,
            mean, scale, swap_rb, labels):
    """Convert PROTOTXT + CAFFEMODEL to a TFLite model with TensorFlow's converter."""
    from caffessd.export.tflite.export import export_tflite

    precision = precision or "float32"
    size = parse_size(input_size, "--input-size") if input_size else None
    check_outputs([("-o", output)], [("labelmap", labels)])
    metadata, origin = export_metadata(prototxt, mean, scale, swap_rb, labels)
    result = export_tflite(prototxt, caffemodel, output, raw=raw, precision=precision, nms=nms, candidates=candidates,
                           calibrate=calibrate,
                           calibration_images=calibration_images, metadata=metadata, input_size=size)
    if origin:
        click.echo(origin, err=True)
    calibrated = f", calibrated on {result.calibration_images} image(s)" if result.calibration_images else ""
    click.echo(f"wrote {result.path} ({len(result.model.content):,} bytes, {precision}{calibrated}) and "
               f"{result.sidecar_path.name}: outputs {', '.join(result.model.outputs)}")
