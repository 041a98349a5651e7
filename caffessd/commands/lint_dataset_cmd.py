"""`caffessd lint-dataset`: every image and box of a dataset checked, one line
per problem, a summary table; exit status 1 when an error would break
training (a thin shell over caffessd.analysis.lint)."""
from __future__ import annotations

import sys

import click

from caffessd.analysis.lint import LintOptions, lint, options_for_net
from caffessd.commands.options import DATASET_SPLIT_HELP, layout_options, parse_size
from caffessd.datasets.labelmap import label_names, name_to_label
from caffessd.datasets.open import FORMATS, open_dataset
from caffessd.protoio import read_labelmap


@click.command("lint-dataset")
@click.argument("dataset", type=click.Path(exists=True))
@click.option("--format", "-f", "fmt", required=True, type=click.Choice(FORMATS), help="dataset format")
@click.option("--split", "-s", help=DATASET_SPLIT_HELP)
@layout_options
@click.option("--root", type=click.Path(file_okay=False), help="list: folder the list's paths are relative to")
@click.option("--label-type", type=click.Choice(["xml", "json", "txt"]), help="list: annotation type")
@click.option("--labelmap", type=click.Path(exists=True, dir_okay=False),
              help="labelmap.prototxt: labels it lacks are reported (and it names list/LMDB label ids)")
@click.option("--net", type=click.Path(exists=True, dir_okay=False),
              help="a train/test/deploy prototxt: objects smaller than any of its priors can match are reported")
@click.option("--input", "input_size", help="with --net: its input WIDTHxHEIGHT when the data layer does not say")
@click.option("--check-images/--no-check-images", default=True, show_default=True,
              help="read every image's header (readable, size as annotated)")
@click.option("--progress/--no-progress", default=True, show_default=True, help="progress bar on stderr")
@click.option("--allow-outside-root", is_flag=True,
              help="read images and annotations that entries name outside the dataset folder "
                   "(absolute paths, '..', links leading out); refused by default")
def command(dataset, fmt, split, images, annotations, root, label_type, labelmap, net, input_size, check_images,
            progress, allow_outside_root):
    """Check DATASET: images readable and of the annotated size, boxes inside
    the image, not inverted, not empty, finite, in pixels, labels in the
    labelmap, no duplicates, none too small for --net; counts per class and
    images without objects. Problems stream to stdout as FILE:LINE: error|warning:
    message [kind]; the exit status is 1 when there is an error."""
    names = labels = None
    if labelmap:
        mapping = read_labelmap(labelmap)
        names, labels = label_names(mapping), name_to_label(mapping, labelmap)
    source = open_dataset(dataset, fmt, split, root=root, label_type=label_type,
                          labelmap=names if fmt in ("list", "lmdb") else None, images=images, annotations=annotations,
                          allow_outside=allow_outside_root)
    if net:
        options = options_for_net(net, parse_size(input_size, "--input") if input_size else None, labels=labels,
                                  check_images=check_images)
    else:
        options = LintOptions(labels=labels, check_images=check_images)
    summary = lint(source, options, lambda problem: click.echo(problem.text()), progress)
    for line in summary.lines():
        click.echo(line)
    if summary.errors:
        sys.exit(1)
