"""`caffessd inspect-lmdb`: what an AnnotatedDatum LMDB holds, and pictures of it."""
from __future__ import annotations

from pathlib import Path

import click
from caffessd.datasets.lmdb_reader import LmdbDataset
from caffessd.datasets.lmdb_stats import lmdb_statistics, show_entries
from caffessd.protoio import read_labelmap
from caffessd.util.files import check_writable
from caffessd.util.outputs import Input, check_outputs


@click.command("inspect-lmdb")
@click.argument("lmdb_path", type=click.Path())
@click.option("--labelmap", type=click.Path(dir_okay=False),
              help="labelmap.prototxt naming the labels [LMDB's folder/labelmap.prototxt if there]")
@click.option("--show", default=0, type=click.IntRange(min=0), help="draw the first N entries as annotated PNGs")
@click.option("--show-dir", type=click.Path(file_okay=False), help="where --show writes [LMDB_show]")
def command(lmdb_path, labelmap, show, show_dir):
    """Entries, classes with box counts, image sizes and boxes per image of
    an LMDB written by make-lmdb (or Caffe's convert_annoset); with --show,
    the stored images with their stored boxes."""
    path = Path(lmdb_path)
    if labelmap is None and (path.parent / "labelmap.prototxt").is_file():
        labelmap = path.parent / "labelmap.prototxt"
    display = None
    if labelmap is not None:
        display = {item.label: item.display_name or item.name for item in read_labelmap(labelmap).item}
    folder = Path(show_dir) if show_dir else path.with_name(path.name + "_show")
    if show:
        check_writable(folder, folder=True)
        check_outputs([("--show-dir", folder)], [Input("LMDB", path, sealed=True), Input("labelmap", labelmap)])
    dataset = LmdbDataset(path, labelmap=labelmap)
    stats = lmdb_statistics(dataset)
    if display:  # report classes by display name
        by_name = {item_name: display.get(label, item_name) for label, item_name in dataset.names.items()}
        stats.objects = type(stats.objects)({by_name.get(k, k): v for k, v in stats.objects.items()})
        stats.difficult = type(stats.difficult)({by_name.get(k, k): v for k, v in stats.difficult.items()})
    for line in stats.lines():
        click.echo(line)
    if show:
        written = show_entries(dataset, show, folder, display)
        click.echo(f"wrote {len(written)} annotated images to {folder}")
