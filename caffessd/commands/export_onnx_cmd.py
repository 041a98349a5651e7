"""`caffessd export-onnx`: convert a Caffe deploy net to an ONNX model."""
from __future__ import annotations

import click

from caffessd.commands.export_options import export_metadata, input_shape_for_size, net_arguments, preprocessing_options
from caffessd.commands.options import optional_floats, parse_size
from caffessd.errors import CaffessdError
from caffessd.util.files import atomic_write, check_writable
from caffessd.net import Net
from caffessd.util.outputs import refuse_overwriting


@click.command("export-onnx")
@net_arguments
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write")
@click.option("--raw", is_flag=True, help="stop before DetectionOutput: outputs loc, conf (after softmax) and priors")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset version (13..21)")
@click.option("--input-size", help="convert for this input size instead of the prototxt's, WIDTHxHEIGHT")
@preprocessing_options
@click.option("--batch", callback=lambda ctx, param, value: _parse_batch(value), default=None,
              help="images per run (input batch dimension), for `detect --batch N`; 'dynamic': any number "
                   "per run (one-image graph in an ONNX Loop)")
@click.option("--image-input", is_flag=True,
              help="take a uint8 HxWx3 image of any size; resize and normalise in the graph; "
                   "outputs boxes (input pixels), scores, labels")
@click.option("--image-order", type=click.Choice(["bgr", "rgb"], case_sensitive=False), default="bgr",
              show_default=True, help="channel order of the --image-input image")
@click.option("--image-resize", type=click.Choice(["opencv", "onnx"]), default="opencv", show_default=True,
              help="--image-input resize: OpenCV's fixed-point arithmetic (equal to cv2.resize and detect) or "
                   "one ONNX Resize (faster, portable, within a level of OpenCV)")
def command(prototxt, caffemodel, output, raw, opset, input_size, mean, scale, swap_rb, labels, batch, image_input,
            image_order, image_resize):
    """Convert PROTOTXT + CAFFEMODEL to an ONNX model (checked with onnx.checker)."""
    from caffessd.onnxconv import to_onnx

    if image_input and raw:
        raise click.UsageError("--image-input needs the full model (DetectionOutput), not --raw")
    optional_floats(mean, "--mean")  # a bad --mean fails before any file is read
    if input_size:
        parse_size(input_size, "--input-size")

    refuse_overwriting([("-o", output)], [("prototxt", prototxt), ("caffemodel", caffemodel), ("labelmap", labels)])
    check_writable(output)
    net = Net.load(prototxt, caffemodel)
    input_shapes = input_shape_for_size(net, prototxt, input_size)
    if batch == DYNAMIC and (raw or image_input):
        raise click.UsageError("--batch dynamic needs the full blob-input model (not --raw, not --image-input)")
    if batch not in (None, DYNAMIC):
        input_shapes = _with_batch(net, prototxt, input_shapes, batch, image_input)
    metadata, origin = export_metadata(prototxt, mean, scale, swap_rb, labels)
    model = to_onnx(net, raw=raw, opset=opset, input_shapes=input_shapes, metadata=metadata)
    if batch == DYNAMIC:
        from caffessd.onnxconv.dynamic_batch import with_dynamic_batch

        model = with_dynamic_batch(model)
    if image_input:
        model = _with_image_input(model, prototxt, metadata, image_order.lower() == "rgb", image_resize)
    atomic_write(output, model.SerializeToString())
    outputs = ", ".join(o.name for o in model.graph.output)
    if origin:
        click.echo(origin, err=True)
    click.echo(f"wrote {output}: {len(model.graph.node)} nodes, opset {opset}, outputs {outputs}")


DYNAMIC = "dynamic"


def _parse_batch(value):
    """--batch: None (not given), 'dynamic', or a whole number of images >= 1."""
    if value is None or value.lower() == DYNAMIC:
        return value and DYNAMIC
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"'{value}' is neither a number of images >= 1 nor 'dynamic'")
    return int(value)


def _with_batch(net, prototxt, input_shapes, batch, image_input):
    """The input shape with `batch` images (the converter unrolls DetectionOutput per image)."""
    if image_input and batch != 1:
        raise click.UsageError("--image-input takes one image; --batch applies to the blob-input export")
    shape = input_shapes or next(iter(net.input_shapes().values()), None)
    if shape is None or len(shape) != 4:
        raise CaffessdError(f"{prototxt}: --batch needs a net with one 4-d image input")
    return (batch, *shape[1:])


def _with_image_input(model, prototxt, metadata, image_rgb, resize):
    from caffessd.onnxconv.image_input import add_image_input
    from caffessd.onnxconv.metadata import set_metadata

    if metadata["mean"] is None and metadata["scale"] is None:
        click.echo(f"caffessd: note: {prototxt} does not say how images are prepared: the graph uses mean 0, "
                   "scale 1; --mean and --scale change that", err=True)
    wrapped = add_image_input(model, metadata["mean"] or [0.0], metadata["scale"] or 1.0,
                              net_rgb=metadata["channel_order"] == "RGB", image_rgb=image_rgb, resize=resize)
    set_metadata(wrapped, {"image_input": {"input": "image", "channel_order": "RGB" if image_rgb else "BGR",
                                           "resize": resize,
                                           "outputs": ["boxes", "scores", "labels"]}})
    return wrapped
