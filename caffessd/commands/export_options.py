"""The preprocessing and label options every exporter takes (export-onnx,
export-openvino, export-ncnn, export-tflite): `--mean`, `--scale`,
`--swap-rb/--bgr`, `--labels`, defaulting from the net's own notes as
`detect` does, so every artifact of one net carries the same facts."""
from __future__ import annotations

from typing import Optional, Tuple

import click

from caffessd import protoio
from caffessd.commands.options import max_memory_option, optional_floats, parse_size
from caffessd.errors import CaffessdError
from caffessd.netprep import NetPreprocessing, net_preprocessing


def net_arguments(command):
    """Decorate an export command with its PROTOTXT and CAFFEMODEL arguments (and --max-memory)."""
    command = click.argument("caffemodel", type=click.Path(dir_okay=False))(command)
    command = click.argument("prototxt", type=click.Path(dir_okay=False))(command)
    return max_memory_option(command)


def preprocessing_options(command):
    """Decorate an export command with --mean, --scale, --swap-rb/--bgr and --labels."""
    for option in reversed([
        click.option("--mean", help="per-channel mean subtracted before the net, e.g. 104,117,123 "
                                    "(stored as metadata)"),
        click.option("--scale", type=float, help="factor applied after mean subtraction (stored as metadata)"),
        click.option("--swap-rb/--bgr", default=None,
                     help="the net expects RGB (--swap-rb) or BGR (--bgr) input [default: from the net, else BGR]"),
        click.option("--labels", type=click.Path(dir_okay=False),
                     help="labelmap.prototxt whose class names go into the metadata"),
    ]):
        command = option(command)
    return command


def export_metadata(prototxt, mean: Optional[str], scale: Optional[float], swap_rb: Optional[bool],
                    labels) -> Tuple[dict, str]:
    """(metadata, origin): channel_order, mean, scale (None where neither the
    options nor the net say) and labels for the exporters' metadata; origin is
    a line saying what came from the net ("" when nothing did), printed once
    the artifact is written."""
    mean_values = optional_floats(mean, "--mean")
    mean_values, scale, swap_rb, origin = net_own_preprocessing(prototxt, mean_values, scale, swap_rb)
    metadata = {"channel_order": "RGB" if swap_rb else "BGR", "mean": mean_values, "scale": scale}
    if labels:
        metadata["labels"] = {str(k): v for k, v in sorted(protoio.labelmap_names(labels).items())}
    return metadata, origin


def net_own_preprocessing(prototxt, mean, scale, rgb):
    """Options win; what they leave open comes from the net's caffessd note or a
    train/test prototxt beside it (caffessd.netprep). Also returns a line
    saying so ("" when nothing came from the net)."""
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


def input_shape_for_size(net, prototxt, input_size: Optional[str]):
    """The (N, C, H, W) shape to convert for with `--input-size WxH` (None:
    as the prototxt declares)."""
    if not input_size:
        return None
    width, height = parse_size(input_size, "--input-size")
    declared = list(net.input_shapes().values())
    if not declared or len(declared[0]) != 4:
        raise CaffessdError(f"{prototxt}: --input-size needs a net with one 4-d image input")
    n, c = declared[0][:2]
    return (n, c, height, width)
