"""`caffessd fit-priors`: which ground-truth boxes a net's priors match, and
priors fitted to the boxes (a thin shell over caffessd.analysis.fit)."""
from __future__ import annotations

import click

from caffessd.analysis.fit import fit_priors, text_lines, write_outputs
from caffessd.commands.options import DATASET_SPLIT_HELP, layout_options, parse_size
from caffessd.datasets.open import FORMATS, open_dataset
from caffessd.util.files import check_writable


@click.command("fit-priors")
@click.argument("net", type=click.Path(exists=True, dir_okay=False))
@click.option("--dataset", required=True, type=click.Path(exists=True), help="dataset root, list file or LMDB")
@click.option("--format", "-f", "fmt", required=True, type=click.Choice(FORMATS), help="dataset format")
@click.option("--split", "-s", help=DATASET_SPLIT_HELP)
@layout_options
@click.option("--root", type=click.Path(file_okay=False), help="list: folder the list's paths are relative to")
@click.option("--label-type", type=click.Choice(["xml", "json", "txt"]), help="list: annotation type")
@click.option("--input", "input_size", help="analyse the net at WIDTHxHEIGHT [default: the data layer's resize]")
@click.option("--limit", type=click.IntRange(min=1), help="read only the first N images")
@click.option("--suggest", is_flag=True,
              help="fit min_size/max_size/aspect_ratio to the boxes and print gen-model flags")
@click.option("--method", type=click.Choice(["both", "scale-rule", "kmeans"]), default="both", show_default=True,
              help="--suggest: the SSD scale rule fitted to the boxes, k-means with IoU distance, or both "
                   "(the better is chosen)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="fit_priors", show_default=True,
              help="folder for coverage.json and the pictures")
@click.option("--plots/--no-plots", default=True, show_default=True, help="write the PNG pictures (matplotlib)")
@click.option("--progress/--no-progress", default=True, show_default=True, help="progress bar on stderr")
@click.option("--allow-outside-root", is_flag=True,
              help="read images and annotations that entries name outside the dataset folder "
                   "(absolute paths, '..', links leading out); refused by default")
def command(net, dataset, fmt, split, images, annotations, root, label_type, input_size, limit, suggest, method,
            out_dir, plots, progress, allow_outside_root):
    """Replay the SSD fork's matching (bipartite, then per prediction at the
    net's overlap_threshold) of NET's priors over a dataset's boxes: the share
    of objects matched per prior layer and by size, the objects no prior
    matches; with --suggest, priors fitted to the boxes and their coverage.

    Example: caffessd fit-priors model/train.prototxt --dataset VOCdevkit -f voc --suggest
    """
    size = parse_size(input_size, "--input") if input_size else None
    check_writable(out_dir, folder=True)
    source = open_dataset(dataset, fmt, split, root=root, label_type=label_type, images=images,
                          annotations=annotations, allow_outside=allow_outside_root)
    methods = ("scale-rule", "kmeans") if method == "both" else (method,)
    result = fit_priors(net, source, size, suggest=suggest, methods=methods, limit=limit, progress=progress)
    written = write_outputs(result, out_dir, plots=plots)
    for line in text_lines(result):
        click.echo(line)
    click.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)
