"""Options every `export-*` command shares with export-onnx: the preprocessing
(--mean, --scale, --swap-rb/--bgr) and class names (--labels) an artifact
records, defaulting from the net's own notes as detect does
(caffessd.netprep)."""
from __future__ import annotations

from typing import Optional, Tuple

import click

from caffessd.commands.options import optional_floats


def preprocessing_options(command):
    """--mean, --scale, --swap-rb/--bgr and --labels, as export-onnx has them."""
    options = [
        click.option("--mean", help="per-channel mean subtracted before the net, e.g. 104,117,123 "
                                    "[default: from the net, else 0]"),
        click.option("--scale", type=float, help="factor applied after mean subtraction [default: from the net, else 1]"),
        click.option("--swap-rb/--bgr", default=None,
                     help="the net expects RGB (--swap-rb) or BGR (--bgr) input [default: from the net, else BGR]"),
        click.option("--labels", type=click.Path(dir_okay=False),
                     help="labelmap.prototxt whose class names the artifact records"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def resolve_preprocessing(prototxt, mean: Optional[str], scale: Optional[float], swap_rb: Optional[bool],
                          labels) -> Tuple[dict, str]:
    """(metadata with channel_order, mean, scale and labels; a line saying
    where the preprocessing came from, "" when only options were used).
    Options win one by one; the rest comes from the net (export-onnx's rule)."""
    from caffessd import protoio
    from caffessd.commands.export_onnx_cmd import _net_own_preprocessing

    mean_values = optional_floats(mean, "--mean")
    mean_values, scale, swap_rb, origin = _net_own_preprocessing(prototxt, mean_values, scale, swap_rb)
    metadata = {"channel_order": "RGB" if swap_rb else "BGR", "mean": mean_values, "scale": scale}
    if labels:
        metadata["labels"] = {str(k): v for k, v in sorted(protoio.labelmap_names(labels).items())}
    return metadata, origin
