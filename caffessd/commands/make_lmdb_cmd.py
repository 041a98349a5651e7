"""`caffessd make-lmdb`: a dataset -> the AnnotatedDatum LMDB the SSD train/test nets read."""
from __future__ import annotations

from pathlib import Path

import click

from caffessd.analysis.lint import LintOptions, startup_lines
from caffessd.commands.options import DATASET_SPLIT_HELP, layout_options, parse_size
from caffessd.datasets.lmdb_writer import ENCODINGS, ConvertOptions, make_lmdb, require_replaceable
from caffessd.errors import CaffessdError
from caffessd.datasets import open_dataset
from caffessd.datasets.labelmap import label_names, resolve_labelmap
from caffessd.util.files import check_writable
from caffessd.protoio import read_labelmap
from caffessd.util.outputs import Input, Output, check_outputs

SOURCE_FORMATS = ("voc", "coco", "wider", "kitti", "list", "yolo", "openimages", "cvat", "labelme")


def is_test_split(split) -> bool:
    """Splits whose LMDB the test net reads (it needs a name_size_file)."""
    return bool(split) and split != "trainval" and ("test" in split or "val" in split)


@click.command("make-lmdb")
@click.argument("dataset", type=click.Path())
@click.option("--format", "-f", "fmt", required=True, type=click.Choice(SOURCE_FORMATS), help="dataset format")
@click.option("--split", "-s", help=DATASET_SPLIT_HELP)
@click.option("--output", "-o", "out", required=True, type=click.Path(), help="LMDB folder to create")
@click.option("--root", type=click.Path(file_okay=False), help="list: folder the list's paths are relative to; "
                                                                 "coco with a JSON file: the images folder")
@layout_options
@click.option("--label-type", type=click.Choice(["xml", "json", "txt"]), help="list: annotation type (default: by extension)")
@click.option("--labelmap", type=click.Path(dir_okay=False),
              help="labelmap.prototxt; written from the dataset's classes if absent [OUT's folder/labelmap.prototxt]")
@click.option("--resize", help="store images resized to WIDTHxHEIGHT (cv::resize INTER_LINEAR)")
@click.option("--min-dim", default=0, type=click.IntRange(min=0), help="scale up so the short side is at least this")
@click.option("--max-dim", default=0, type=click.IntRange(min=0), help="scale down so the long side is at most this")
@click.option("--encode", default="keep", show_default=True, type=click.Choice(ENCODINGS),
              help="keep: the files' own bytes (as the SSD recipe); jpg/png: encode (files already in it are kept); "
                   "none: raw pixels")
@click.option("--gray", is_flag=True, help="grayscale images (1 channel)")
@click.option("--shuffle", is_flag=True, help="shuffle the image order")
@click.option("--seed", default=0, show_default=True, help="seed of --shuffle")
@click.option("--check-size", is_flag=True, help="require every stored image to have the same size")
@click.option("--check-label", is_flag=True, help="a label missing from the labelmap (or listed twice in it) is an error")
@click.option("--skip-bad", is_flag=True, help="skip and count bad images instead of stopping")
@click.option("--ignored", default="difficult", show_default=True, type=click.Choice(["difficult", "drop"]),
              help="crowd/DontCare/invalid regions: write as difficult boxes (when labelled) or leave out")
@click.option("--name-size", "name_size", type=click.Path(dir_okay=False),
              help="write `name height width` lines here [OUT_name_size.txt for test/val splits]")
@click.option("--overwrite", is_flag=True, help="replace an existing OUT (only an LMDB folder is ever replaced)")
@click.option("--allow-outside-root", is_flag=True,
              help="read images and annotations that entries name outside the dataset folder "
                   "(absolute paths, '..', links leading out); refused by default")
@click.option("--lint/--no-lint", "lint_first", default=True, show_default=True,
              help="check every annotation first and print lint-dataset's summary (images are checked while written)")
@click.option("--workers", default=None, type=click.IntRange(min=0), help="decode/encode threads [cores, at most 8]")
def command(dataset, fmt, split, out, root, images, annotations, label_type, labelmap, resize, min_dim, max_dim, encode,
            gray, shuffle, seed, check_size, check_label, skip_bad, ignored, name_size, overwrite, allow_outside_root,
            lint_first, workers):
    """Convert DATASET (VOC, COCO, WIDER FACE, KITTI, a Caffe list file, YOLO,
    Open Images, CVAT for images or LabelMe) into an LMDB of AnnotatedDatum, as
    Caffe SSD's convert_annoset does."""
    out = Path(out)
    if resize and (min_dim or max_dim):
        raise CaffessdError("--resize and --min-dim/--max-dim exclude each other (convert_annoset uses only min/max-dim then)")
    size = parse_size(resize, "--resize") if resize else None
    if out.exists() and not overwrite:
        raise CaffessdError(f"{out}: already exists (give --overwrite to replace it)")
    check_writable(out, folder=True)
    labelmap_path = Path(labelmap) if labelmap else out.parent / "labelmap.prototxt"
    names = None
    if fmt == "list" and labelmap_path.exists():
        names = label_names(read_labelmap(labelmap_path))  # names txt label ids
    source = open_dataset(dataset, fmt, split, root=root, label_type=label_type, labelmap=names,
                          images=images, annotations=annotations, allow_outside=allow_outside_root)
    label_of, _, new_labelmap = resolve_labelmap(source, labelmap_path, check_label)
    split = split or getattr(source, "split", None)
    if name_size is None and is_test_split(split):
        name_size = out.with_name(out.name + "_name_size.txt")
    _check_outputs(source, dataset, root, out, name_size, labelmap_path, bool(new_labelmap), images, annotations)
    if out.exists():
        require_replaceable(out)
    for path in filter(None, [name_size, new_labelmap and labelmap_path]):
        check_writable(path)
    if lint_first:
        for line in startup_lines(source, LintOptions(labels=label_of, check_images=False)):
            click.echo(line)
    options = ConvertOptions(resize=size, min_dim=min_dim, max_dim=max_dim, encode=encode, gray=gray,
                             check_label=check_label, check_size=check_size, ignored=ignored)
    summary = make_lmdb(source, out, label_of, options, shuffle=shuffle, seed=seed, skip_bad=skip_bad,
                        overwrite=overwrite, name_size_file=name_size, workers=workers,
                        extra_files=[(labelmap_path, new_labelmap)] if new_labelmap else [],
                        warn=lambda line: click.echo(f"caffessd: warning: {line}", err=True))
    if new_labelmap:
        summary.labelmap_written = labelmap_path
    for line in summary.lines():
        click.echo(line)


def _check_outputs(source, dataset, root, out, name_size, labelmap_path, labelmap_is_new, images=None,
                   annotations=None) -> None:
    """OUT must not be or hold the dataset; the name-size file and a new
    labelmap must not be any file the dataset reads (caffessd.util.outputs)."""
    inputs = [Input("dataset", dataset), Input("--root folder", root), Input("--images folder", images),
              Input("--annotations", annotations),
              Input("labelmap", None if labelmap_is_new else labelmap_path)]
    outputs = [Output("--output", out, replaces=True), Output("--name-size file", name_size),
               Output("new labelmap", labelmap_path if labelmap_is_new else None)]
    check_outputs(outputs, inputs)
    if name_size is not None and Path(name_size).exists():  # a new file cannot be an input: look only then
        check_outputs([Output("--name-size file", name_size)], dataset_inputs(source))


def dataset_inputs(source):
    """(label, path) of every file a dataset reader will read."""
    found = [Input("dataset file", path) for path in source.dataset_files()]
    for entry in source.entries():
        found.extend(Input(f"file of entry '{source.entry_name(entry)}'", path) for path in source.files(entry))
    return found
