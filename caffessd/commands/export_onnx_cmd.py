"""`caffessd export-onnx`: convert a Caffe deploy net to an ONNX model."""
from __future__ import annotations

import click

from caffessd.commands.options import max_memory_option, optional_floats, parse_size
from caffessd.errors import CaffessdError
from caffessd.util.files import atomic_write, check_writable
from caffessd import protoio
from caffessd.net import Net
from caffessd.util.outputs import refuse_overwriting
from caffessd.netprep import NetPreprocessing, net_preprocessing


@click.command("export-onnx")
@max_memory_option
@click.argument("prototxt", type=click.Path(dir_okay=False))
@click.argument("caffemodel", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write")
@click.option("--raw", is_flag=True, help="stop before DetectionOutput: outputs loc, conf (after softmax) and priors")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset version (13..21)")
@click.option("--input-size", help="convert for this input size instead of the prototxt's, WIDTHxHEIGHT")
@click.option("--mean", help="per-channel mean subtracted before the net, e.g. 104,117,123 (stored as metadata)")
@click.option("--scale", type=float, help="factor applied after mean subtraction (stored as metadata)")
@click.option("--swap-rb/--bgr", default=None,
              help="the net expects RGB (--swap-rb) or BGR (--bgr) input [default: from the net, else BGR]")
@click.option("--labels", type=click.Path(dir_okay=False), help="labelmap.prototxt whose class names go into the metadata")
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
    mean_values = optional_floats(mean, "--mean")
    size = parse_size(input_size, "--input-size") if input_size else None

    refuse_overwriting([("-o", output)], [("prototxt", prototxt), ("caffemodel", caffemodel), ("labelmap", labels)])
    check_writable(output)
    net = Net.load(prototxt, caffemodel)
    input_shapes = None
    if size is not None:
        declared = list(net.input_shapes().values())
        if not declared or len(declared[0]) != 4:
            raise CaffessdError(f"{prototxt}: --input-size needs a net with one 4-d image input")
        n, c = declared[0][:2]
        input_shapes = (n, c, size[1], size[0])
    if batch == DYNAMIC and (raw or image_input):
        raise click.UsageError("--batch dynamic needs the full blob-input model (not --raw, not --image-input)")
    if batch not in (None, DYNAMIC):
        input_shapes = _with_batch(net, prototxt, input_shapes, batch, image_input)
    mean_values, scale, swap_rb, origin = _net_own_preprocessing(prototxt, mean_values, scale, swap_rb)
    metadata = {"channel_order": "RGB" if swap_rb else "BGR", "mean": mean_values, "scale": scale}
    if labels:
        metadata["labels"] = {str(k): v for k, v in sorted(protoio.labelmap_names(labels).items())}
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


def _net_own_preprocessing(prototxt, mean, scale, rgb):
    """Options win; what they leave open comes from the net's caffessd note or a
    train/test prototxt beside it (caffessd.netprep). Also returns a line
    saying so ("" when nothing came from the net), printed once the model is written."""
    own = net_preprocessing(prototxt)
    given = [value is not None for value in (mean, scale, rgb)]
    if own.assumed or all(given):
        return mean, scale, bool(rgb), ""
    mean = list(own.mean) if mean is None else mean
    scale = own.scale if scale is None else scale
    rgb = own.rgb if rgb is None else rgb
    used = NetPreprocessing(tuple(mean * 3 if len(mean) == 1 else mean), scale, rgb)
    origin = f"preprocessing: {used.describe()} (from {own.source}{', with your options' if any(given) else ''})"
    return mean, scale, rgb, origin


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
