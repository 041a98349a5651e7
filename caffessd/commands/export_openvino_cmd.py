"""`caffessd export-openvino`: a Caffe SSD deploy net to an OpenVINO IR."""
from __future__ import annotations

import click

from caffessd.commands.export_options import export_metadata, input_shape_for_size, net_arguments, preprocessing_options
from caffessd.commands.options import optional_floats, parse_size
from caffessd.net import Net
from caffessd.util.files import check_writable
from caffessd.util.lmdb_check import looks_like_lmdb
from caffessd.util.outputs import Input, check_outputs


@click.command("export-openvino")
@net_arguments
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="IR to write: NAME.xml (the weights go to NAME.bin beside it)")
@click.option("--raw", is_flag=True, help="stop before DetectionOutput: outputs loc, conf (after softmax) and priors")
@click.option("--input-size", help="convert for this input size instead of the prototxt's, WIDTHxHEIGHT")
@preprocessing_options
@click.option("--int8", is_flag=True, help="int8 by NNCF post-training quantization (needs --calibrate)")
@click.option("--calibrate", type=click.Path(),
              help="folder of images or AnnotatedDatum LMDB (make-lmdb) to calibrate the int8 activations on")
@click.option("--images", type=click.IntRange(min=1), default=100, show_default=True,
              help="calibration images to use (the first N)")
def command(prototxt, caffemodel, output, raw, input_size, mean, scale, swap_rb, labels, int8, calibrate, images):
    """Convert PROTOTXT + CAFFEMODEL to an OpenVINO IR (NAME.xml + NAME.bin):
    preprocessing in the graph (PrePostProcessor), OpenVINO's DetectionOutput,
    caffessd's metadata in rt_info; `--int8 --calibrate DIR_OR_LMDB` quantizes
    with NNCF (DetectionOutput kept float)."""
    from caffessd.export.openvino import export_openvino

    if int8 != bool(calibrate):
        raise click.UsageError("--int8 and --calibrate go together (int8 needs pictures to calibrate on)")
    optional_floats(mean, "--mean")  # a bad --mean fails before any file is read
    if input_size:
        parse_size(input_size, "--input-size")
    if not output.lower().endswith(".xml"):
        raise click.BadParameter(f"'{output}': an OpenVINO IR is NAME.xml (its weights go to NAME.bin)",
                                 param_hint="-o")
    weights_file = output[:-4] + ".bin"
    check_outputs([("-o", output), ("the IR weights", weights_file)],
                  [Input("prototxt", prototxt), Input("caffemodel", caffemodel), Input("labelmap", labels),
                   Input("--calibrate", calibrate, sealed=bool(calibrate) and looks_like_lmdb(calibrate))])
    check_writable(output)
    check_writable(weights_file)
    shape = input_shape_for_size(Net.load(prototxt), prototxt, input_size)
    metadata, origin = export_metadata(prototxt, mean, scale, swap_rb, labels)
    report = export_openvino(prototxt, caffemodel, output, metadata=metadata, input_shapes=shape, raw=raw,
                             calibrate=calibrate if int8 else None, images=images)
    if origin:
        click.echo(origin, err=True)
    for line in report.lines():
        click.echo(line)
