import functools
import json
import sys
from pathlib import Path

import click

from caffessd.commands.options import max_memory_option
from caffessd.errors import CaffessdError
from caffessd.image.preprocess import expand_image_args, load_image, parse_mean
from caffessd.protoio import labelmap_names
from caffessd.util.files import atomic_write, check_writable
from caffessd.netprep import net_preprocessing
from caffessd.util.outputs import refuse_overwriting


@click.command("detect")
@max_memory_option
@click.argument("images", nargs=-1)
@click.option("--model", "prototxt", type=click.Path(dir_okay=False), help="deploy prototxt (with --weights)")
@click.option("--weights", type=click.Path(dir_okay=False), help="caffemodel (with --model)")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="ONNX model from `caffessd export-onnx`")
@click.option("--labels", type=click.Path(dir_okay=False), help="labelmap.prototxt naming the classes")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="minimum score to report")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="detections", show_default=True,
              help="folder for the annotated images")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="JSON file (default OUT/detections.json)")
@click.option("--mean", help="per-channel mean, '127.5' or '104,117,123' (Caffe models)")
@click.option("--scale", type=float, help="multiplier after mean subtraction, e.g. 0.007843")
@click.option("--rgb/--bgr", default=None, help="the net takes RGB or BGR [default: from the net, else BGR]")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="where converted models are kept")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="images per inference run [default: the model's batch size; Caffe models are converted for N; "
                   "any N for an ONNX model exported with --batch dynamic]")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="threads decoding and preprocessing images ahead of inference (0: inline)")
@click.option("--streams", type=click.IntRange(min=1), default=1, show_default=True,
              help="inference runs at once, each on its own thread; with N > 1, --threads defaults to 1 "
                   "(fastest over a folder: --streams = the number of cores)")
@click.option("--max-pixels", type=click.IntRange(min=0), default=None,
              help="refuse images with more pixels (decompression bombs); default 200000000 or "
                   "$CAFFESSD_MAX_PIXELS, 0 = no limit")
def command(images, prototxt, weights, onnx_path, labels, threshold, out_dir, json_path, mean, scale, rgb,
            threads, cache_dir, batch, workers, streams, max_pixels):
    """Detect objects in IMAGES (files, folders, globs); with no model, find faces
    with the embedded YuFaceDetectNet. With no image, run on the bundled sample photo.

    Writes an annotated copy of each image to OUT and all detections to JSON."""
    from caffessd.inference.detector import Detector, sample_image

    if bool(prototxt) != bool(weights):
        raise click.UsageError("--model and --weights go together (give neither for the embedded face detector)")
    paths = expand_image_args(images) if images else [sample_image()]
    if not paths:
        raise CaffessdError("no images found in " + ", ".join(images))
    if onnx_path and (prototxt or weights):
        raise click.UsageError("give either --onnx or --model/--weights, not both")
    # Fail before the model runs, not after the first annotated image is written.
    check_writable(out_dir, folder=True)
    json_target = Path(json_path) if json_path else Path(out_dir) / "detections.json"
    check_writable(json_target)
    _refuse_overwriting_images(paths, out_dir, json_target)
    detector = Detector(prototxt, weights, onnx_path=onnx_path,
                        labels=labelmap_names(labels) if labels else None,
                        preprocessing=_preprocessing(prototxt, mean, scale, rgb),
                        threshold=threshold, cache=Path(cache_dir) if cache_dir else None,
                        threads=threads or (1 if streams > 1 else None),
                        batch=batch if batch and not onnx_path else 1)
    # Said once the model loaded: a net that is refused gets its one error line only.
    if prototxt and mean is None and scale is None:
        _say_when_preprocessing_is_assumed(prototxt)
    if detector.converted and detector.onnx_path:
        click.echo(f"converted the Caffe model to {detector.onnx_path} (cached for later runs)", err=True)
    results, failures = [], []
    out_dir = Path(out_dir)
    load = functools.partial(load_image, max_pixels=max_pixels)
    interrupted = False
    try:
        with click.progressbar(length=len(paths), label="detecting", file=sys.stderr, hidden=len(paths) < 2) as bar:
            _detect_all(detector, paths, out_dir, load, batch, workers, streams, bar, results, failures)
    except KeyboardInterrupt:  # Ctrl-C: keep what is finished (JSON below), then exit 130
        interrupted = True
    for result in results:
        _print_result(result)
    if results:
        atomic_write(json_target, json.dumps(results, indent=2) + "\n")
        click.echo(f"wrote {len(results)} annotated image(s) to {out_dir}/ and {json_target}", err=True)
    for failure in failures:
        click.echo(f"caffessd: error: {failure}", err=True)
    if interrupted:
        _report_interrupt(len(results), len(paths), json_target if results else None)
    if failures:
        raise SystemExit(1)


def _say_when_preprocessing_is_assumed(prototxt):
    if net_preprocessing(prototxt).assumed:
        click.echo(f"caffessd: note: {prototxt} does not say how images are prepared (no caffessd note, no "
                   "train/test prototxt beside it): assuming mean 0, scale 1, BGR; --mean, --scale and "
                   "--rgb change that (MobileNet-SSD: --mean 127.5 --scale 0.007843)", err=True)


def _annotated_path(out_dir, index: int, path, total: int) -> Path:
    """Where an image's annotated copy goes: STEM.jpg, or NNNN_STEM.jpg among several."""
    stem = Path(path).stem
    return Path(out_dir) / (f"{stem}.jpg" if total == 1 else f"{index:04d}_{stem}.jpg")


def _refuse_overwriting_images(paths, out_dir, json_target) -> None:
    """`detect photo.jpg --out .` would replace the photo by its annotated copy
    (named as the detect loop names it: STEM.jpg, or NNNN_STEM.jpg for several)."""
    outputs = [("--json", json_target)] + [("the annotated image", _annotated_path(out_dir, i, p, len(paths)))
                                           for i, p in enumerate(paths)]
    refuse_overwriting(outputs, [("image", p) for p in paths])


def _report_interrupt(done: int, total: int, json_target) -> None:
    kept = f"; their detections are in {json_target}" if json_target else ""
    click.echo(f"caffessd: interrupted after {done} of {total} image(s){kept}", err=True)
    raise SystemExit(130)


def _preprocessing(prototxt, mean, scale, rgb):
    """Preprocessing from the options over the net's own, for a Caffe model;
    None keeps the model's own."""
    if mean is None and scale is None and rgb is None:
        return None
    if not prototxt:
        raise click.UsageError("--mean, --scale and --rgb apply to a Caffe model (--model); the embedded "
                               "model and exported ONNX files carry their own preprocessing")
    from caffessd.inference.detector import preprocessing_for_net

    prep = preprocessing_for_net(prototxt)
    if mean is not None:
        try:
            prep.mean = parse_mean(mean)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--mean")
    if scale is not None:
        prep.scale = scale
    if rgb is not None:
        prep.rgb = rgb
    return prep


def _detect_all(detector, paths, out_dir, load, batch, workers, streams, bar, results, failures):
    """Pipelined: decoding on `workers` threads, `batch` images per run and
    `streams` runs at once, the
    annotated copies written by a background thread (caffessd.inference.batching).
    Appends to `results` and `failures` as images finish, so an interrupt
    keeps what was done."""
    from caffessd.inference.batching import AnnotationWriter

    writer = AnnotationWriter()
    try:
        for index, found in enumerate(detector.detect_many(paths, batch=batch, workers=workers, load=load, streams=streams)):
            bar.update(1)
            if found.error is not None:
                failures.append(str(found.error))
                continue
            path = Path(found.source)
            target = _annotated_path(out_dir, index, path, len(paths))
            writer.submit(found.image, found.detections, target)
            results.append({"file": str(path), "annotated": str(target), "width": found.image.shape[1],
                            "height": found.image.shape[0], "detections": [d.to_dict() for d in found.detections]})
    finally:
        writer.close()


def _print_result(result):
    found = result["detections"]
    click.echo(f"{result['file']}: {len(found)} detection(s)")
    for det in found:
        x0, y0, x1, y1 = det["box"]
        click.echo(f"  {det['name']:<12} {det['score']:.3f}  box [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}]")
