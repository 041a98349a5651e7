"""`caffessd convert-tf`: TF Object Detection API SSD checkpoints to Caffe, exactly.

A thin shell over caffessd.tfconvert (which imports TensorFlow lazily).
"""
from __future__ import annotations

import sys

import click

from caffessd.commands.options import parse_size
from caffessd.errors import CaffessdError
from caffessd.util.files import check_writable
from caffessd.util.outputs import check_outputs
from caffessd.tfconvert.convert import DEPLOY_NAME, LABELMAP_NAME, WEIGHTS_NAME, convert_tf
from caffessd.tfconvert.keras_backbone import convert_keras


def _progress_bar(total: int, label: str):
    return click.progressbar(length=total, label=label, file=sys.stderr)


@click.command("convert-tf")
@click.argument("ckpt", required=False, type=click.Path())
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="folder for deploy.prototxt, deploy.caffemodel (and labelmap.prototxt)")
@click.option("--pipeline", type=click.Path(dir_okay=False),
              help="the model's pipeline.config (classes, input size, anchors, box coder, NMS)")
@click.option("--input", "input_size", help="input size N or WIDTHxHEIGHT [default: from --pipeline, else 300]")
@click.option("--merge-bn", is_flag=True, help="fold BatchNorm into the convs (no BatchNorm/Scale layers)")
@click.option("--plain-caffe", is_flag=True,
              help="ReLU and symmetric padding for stock Caffe (not exact); prints the deviation")
@click.option("--use-ema", is_flag=True, help="read ExponentialMovingAverage values where present")
@click.option("--classes", "classes", metavar="voc", help="keep a class subset: 'voc' (COCO to PASCAL VOC)")
@click.option("--class-map", type=click.Path(dir_okay=False),
              help="file of 'TF_ID [name]' lines: the classes to keep, in output order")
@click.option("--rgb", is_flag=True, help="keep TF's RGB input order (default: the net takes BGR, as Caffe does)")
@click.option("--keras", "keras_file", type=click.Path(dir_okay=False),
              help="instead of a checkpoint: a tf.keras.applications MobileNet/MobileNetV2 .h5 "
                   "to initialise the backbone of a gen-model net")
@click.option("--head", default="ssdlite", show_default=True, metavar="ssd|ssdlite",
              help="with --keras: the head type of the net")
@click.option("--num-classes", type=int, default=21, show_default=True,
              help="with --keras: classes of the net, background included")
def command(ckpt, out_dir, pipeline, input_size, merge_bn, plain_caffe, use_ema, classes, class_map,
            rgb, keras_file, head, num_classes):
    """Convert an SSD MobileNet checkpoint of the TF Object Detection API
    (ssd_mobilenet_v1/v2, ssdlite_mobilenet_v2, any class count and input
    size) into a Caffe deploy net + caffemodel that reproduces TensorFlow's
    outputs. CKPT is a checkpoint prefix (model.ckpt-200000), a folder with a
    'checkpoint' file, or a frozen_inference_graph.pb."""
    # (height, width), the order caffessd.tfconvert works in
    size = parse_size(input_size, "--input")[::-1] if input_size else None
    check_writable(out_dir, folder=True)  # before TensorFlow loads anything
    _refuse_overwriting_inputs(out_dir, ckpt, pipeline, class_map, keras_file)
    if keras_file:
        if ckpt:
            raise CaffessdError("give a checkpoint or --keras, not both")
        _convert_keras(keras_file, out_dir, size, head, num_classes, merge_bn, not rgb)
        return
    if not ckpt:
        raise CaffessdError("missing CKPT (a checkpoint prefix, folder or frozen .pb), or --keras FILE")

    bar = None

    def progress(n, total):
        nonlocal bar
        if bar is None:
            bar = _progress_bar(total, "converting").__enter__()
        bar.update(n)

    result = convert_tf(ckpt, out_dir, pipeline=pipeline, input_size=size, merge_bn=merge_bn,
                        plain_caffe=plain_caffe, use_ema=use_ema, classes=classes,
                        class_map=class_map, bgr=not rgb, progress=progress)
    if bar is not None:
        bar.__exit__(None, None, None)
    spec = result.spec
    click.echo(f"model: {spec.arch} (width {spec.depth_multiplier:g}, {spec.num_classes} classes, "
               f"box predictor {spec.box_kernel}x{spec.box_kernel}), input {result.width}x{result.height}")
    click.echo(f"structure: {spec.describe()}")
    click.echo(f"read {len(result.variables)} TF variables into {len(set(c for _, c in result.variables))} "
               f"Caffe layers; output classes: {len(result.class_slots)} (background included)")
    if result.plain_deviation is not None:
        dev = result.plain_deviation
        click.echo("plain Caffe (ReLU, symmetric padding) deviates from the exact net by "
                   f"max |d box encoding| {dev['mbox_loc']:.4g}, max |d class logit| {dev['mbox_conf']:.4g}")
    for note in result.notes:
        click.echo(f"note: {note}")
    for path in (result.prototxt, result.caffemodel, result.labelmap):
        if path is not None:
            click.echo(f"wrote {path}")


def _refuse_overwriting_inputs(out_dir, ckpt, pipeline, class_map, keras_file) -> None:
    """deploy.prototxt, deploy.caffemodel and labelmap.prototxt in OUT must not be
    a file being read (caffessd.util.outputs)."""
    from pathlib import Path

    written = [("-o", Path(out_dir) / name) for name in (DEPLOY_NAME, WEIGHTS_NAME, LABELMAP_NAME)]
    check_outputs(written, [("checkpoint", ckpt), ("pipeline", pipeline), ("class map", class_map),
                            ("Keras file", keras_file)])


def _convert_keras(keras_file, out_dir, size, head, num_classes, merge_bn, bgr):
    height, width = size or (300, 300)
    result = convert_keras(keras_file, out_dir, height=height, width=width, head=head,
                           num_classes=num_classes, merge_bn=merge_bn, bgr=bgr)
    click.echo(f"keras {result.backbone} (width {result.width:g}): {result.layers} backbone layers "
               f"initialised; heads keep their filler initialisation")
    for path in (result.prototxt, result.caffemodel):
        click.echo(f"wrote {path}")
