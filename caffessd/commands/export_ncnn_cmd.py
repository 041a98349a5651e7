"""`caffessd export-ncnn`: a Caffe deploy net as an ncnn model (NAME.param + NAME.bin)."""
from __future__ import annotations

import click

from caffessd.commands.export_options import export_metadata, net_arguments, preprocessing_options
from caffessd.commands.options import parse_size
from caffessd.util.outputs import check_outputs


@click.command("export-ncnn")
@net_arguments
@click.option("-o", "--output", required=True, type=click.Path(),
              help="folder for NAME.param, NAME.bin and NAME.caffessd.json (NAME: the net's name), "
                   "or the .param path itself")
@click.option("--fp16", is_flag=True, help="store convolution and inner-product weights as float16 (half the file)")
@click.option("--fold-bn", is_flag=True, help="fold BatchNorm and Scale into the convolutions first "
                                              "(else ncnn's own BatchNorm and Scale layers)")
@click.option("--raw", is_flag=True, help="stop before DetectionOutput: outputs loc, conf (after softmax) and priors")
@click.option("--input-size", help="convert for this input size instead of the prototxt's, WIDTHxHEIGHT")
@preprocessing_options
def command(prototxt, caffemodel, output, fp16, fold_bn, raw, input_size, mean, scale, swap_rb, labels):
    """Write PROTOTXT + CAFFEMODEL as an ncnn model, straight from the Caffe net."""
    from caffessd.export.ncnn.export import export_ncnn

    size = parse_size(input_size, "--input-size") if input_size else None
    check_outputs([("-o", output)], [("labelmap", labels)])
    metadata, origin = export_metadata(prototxt, mean, scale, swap_rb, labels)
    result = export_ncnn(prototxt, caffemodel, output, raw=raw, fp16=fp16, fold_bn=fold_bn,
                         metadata=metadata, input_size=size)
    if origin:
        click.echo(origin, err=True)
    if fold_bn:
        click.echo(f"folded {len(result.folded)} BatchNorm/Scale layer(s)"
                   + (f"; kept {len(result.kept)}: {'; '.join(result.kept)}" if result.kept else ""), err=True)
    click.echo(f"wrote {result.param_path}, {result.bin_path.name} ({len(result.model.weights):,} bytes"
               f"{', float16 weights' if fp16 else ''}) and {result.sidecar_path.name}: "
               f"{result.model.layer_count} layers, outputs {', '.join(result.model.outputs)}")
