import functools
import json
import os
import sys
from pathlib import Path

import click

from caffessd.commands.options import engine_options, max_memory_option
from caffessd.errors import CaffessdError, FormatError, Terminated
from caffessd.image.preprocess import load_image, parse_mean
from caffessd.protoio import labelmap_names
from caffessd.util.files import atomic_write, check_writable
from caffessd.netprep import net_preprocessing
from caffessd.util.outputs import check_outputs


@click.command("detect")
@max_memory_option
@click.argument("images", nargs=-1)
@click.option("--model", "prototxt", type=click.Path(dir_okay=False), help="deploy prototxt (with --weights)")
@click.option("--weights", type=click.Path(dir_okay=False), help="caffemodel (with --model)")
@click.option("--artifact", "--onnx", "onnx_path", type=click.Path(dir_okay=False),
              help="exported model: .onnx (export-onnx), OpenVINO .xml (export-openvino), ncnn .param, .tflite")
@engine_options
@click.option("--labels", type=click.Path(dir_okay=False), help="labelmap.prototxt naming the classes")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="minimum score to report")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="detections", show_default=True,
              help="folder for the annotated images and videos")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="JSON file (default OUT/detections.json; with a video, JSON Lines in OUT/detections.jsonl)")
@click.option("--mean", help="per-channel mean, '127.5' or '104,117,123' (Caffe models)")
@click.option("--scale", type=float, help="multiplier after mean subtraction, e.g. 0.007843")
@click.option("--rgb/--bgr", default=None, help="the net takes RGB or BGR [default: from the net, else BGR]")
@click.option("--threads", type=click.IntRange(min=1), help="inference threads (onnxruntime intra-op, OpenVINO, ...)")
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
@click.option("--every", type=click.IntRange(min=1), help="videos: detect on every Nth frame")
@click.option("--fps", "sample_fps", metavar="F", help="videos: detect on at most F frames per second (e.g. 5, 12.5)")
@click.option("--start", metavar="TIME", help="videos: start at TIME (seconds, or [HH:]MM:SS)")
@click.option("--duration", metavar="TIME", help="videos: stop after TIME (seconds, or [HH:]MM:SS)")
@click.option("--track", is_flag=True, help="videos: give each object an id that persists across frames (SORT)")
@click.option("--count", "count_lines", multiple=True, metavar="X0,Y0,X1,Y1",
              help="videos: count tracks crossing this line (pixels), per class and direction; implies --track; "
                   "repeatable")
@click.option("--reconnect", type=click.IntRange(min=0), default=3, show_default=True,
              help="live streams and cameras: reopen a stalled or dropped source up to N times in a row")
@click.option("--video/--no-video", "write_video", default=True,
              help="videos: write the annotated video to OUT [default: --video]")
def command(images, prototxt, weights, onnx_path, engine, device, precision, labels, threshold, out_dir, json_path,
            mean, scale, rgb, threads, cache_dir, batch, workers, streams, max_pixels, every, sample_fps, start,
            duration, track, count_lines, reconnect, write_video):
    """Detect objects in IMAGES (files, folders, globs) and videos (files, rtsp:// and
    other stream URLs, - for a stream on stdin, /dev/videoN cameras); with no model,
    find faces with the embedded YuFaceDetectNet. With no input, run on the bundled
    sample photo.

    Writes an annotated copy of each image (and video) to OUT and the detections to
    JSON: one JSON document for images only, JSON Lines (one line per image or
    video frame, written as they come) when there is a video."""
    from caffessd.inference.detector import Detector, sample_image
    from caffessd.inference.engines.base import workload_for
    from caffessd.video.inputs import IMAGE, expand_inputs

    if bool(prototxt) != bool(weights):
        raise click.UsageError("--model and --weights go together (give neither for the embedded face detector)")
    missing = []  # names that match nothing: reported with the failures, the other inputs still run
    inputs = expand_inputs(images, missing=missing) if images else [(IMAGE, sample_image())]
    if not inputs:
        if missing:
            more = f" (and {len(missing) - 1} more name(s) that match nothing)" if len(missing) > 1 else ""
            raise FormatError(missing[0].path, missing[0].message + more)
        raise CaffessdError("no images or videos found in " + ", ".join(images))
    paths = [item for kind, item in inputs if kind == IMAGE]
    videos = [(number, item) for number, (kind, item) in enumerate(inputs) if kind != IMAGE]
    video_options = _video_options(videos, every, sample_fps, start, duration, track, count_lines, reconnect,
                                   batch, workers, streams, write_video)
    # One picture has nothing to decode ahead: inline.
    image_workers = workers if len(paths) > 1 else 0
    if onnx_path and (prototxt or weights):
        raise click.UsageError("give either --artifact/--onnx or --model/--weights, not both")
    # Fail before the model runs, not after the first annotated image is written.
    check_writable(out_dir, folder=True)
    default_json = "detections.jsonl" if videos else "detections.json"
    json_target = Path(json_path) if json_path else Path(out_dir) / default_json
    check_writable(json_target)
    _refuse_overwriting_inputs(inputs, out_dir, json_target, video_options,
                               _model_inputs(prototxt, weights, onnx_path, labels))
    detector = Detector(prototxt, weights, onnx_path=onnx_path, engine=engine, device=device, precision=precision,
                        labels=labelmap_names(labels) if labels else None,
                        preprocessing=_preprocessing(prototxt, mean, scale, rgb),
                        threshold=threshold, cache=Path(cache_dir) if cache_dir else None,
                        threads=threads or (1 if streams > 1 else None),
                        batch=batch if batch and not onnx_path else 1,
                        # Tuned once for what detect_many will ask (no second session).
                        workload=workload_for(image_workers if paths else workers, streams))
    # Said once the model loaded: a net that is refused gets its one error line only.
    if prototxt and mean is None and scale is None:
        _say_when_preprocessing_is_assumed(prototxt)
    if detector.converted and detector.onnx_path:
        click.echo(f"converted the Caffe model to {detector.onnx_path} (cached for later runs)", err=True)
    results, failures = [], [str(error) for error in missing]
    out_dir = Path(out_dir)
    load = functools.partial(load_image, max_pixels=max_pixels)
    interrupted = None
    json_lines = _json_lines(json_target) if videos else None
    try:
        if paths:
            with click.progressbar(length=len(paths), label="detecting", file=sys.stderr,
                                   hidden=len(paths) < 2) as bar:
                _detect_all(detector, paths, out_dir, load, batch, image_workers, streams, bar, results, failures,
                            numbering=[n for n, (kind, _) in enumerate(inputs) if kind == IMAGE], total=len(inputs))
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep what is finished (JSON below), then exit 130/143
        interrupted = exc
    for result in results:
        _print_result(result)
    if results:
        if json_lines is not None:
            for result in results:
                json_lines.write(result)
        else:
            atomic_write(json_target, json.dumps(results, indent=2) + "\n")
        click.echo(f"wrote {len(results)} annotated image(s) to {out_dir}/ and {json_target}", err=True)
    status = None
    if videos and interrupted is None:
        status = _detect_videos(detector, videos, len(inputs), out_dir, json_lines, video_options, failures)
    if json_lines is not None:
        json_lines.close()
    for failure in failures:
        click.echo(f"caffessd: error: {failure}", err=True)
    if interrupted is not None:
        _report_interrupt(len(results), len(paths), json_target if results else None, interrupted)
    if status is not None:
        raise SystemExit(status)
    if failures:
        raise SystemExit(1)


def _json_lines(target):
    from caffessd.video.outputs import JsonLines

    return JsonLines(target)


def _video_options(videos, every, sample_fps, start, duration, track, count_lines, reconnect, batch, workers,
                   streams, write_video):
    """The VideoJob for the videos; a usage error for video options without a video."""
    given = [name for name, value in (("--every", every), ("--fps", sample_fps), ("--start", start),
                                      ("--duration", duration), ("--track", track), ("--count", count_lines))
             if value]
    if not videos:
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to videos, and no video is among the inputs")
        return None
    from caffessd.video.counting import CountingLine
    from caffessd.video.run import VideoJob, check_sources
    from caffessd.video.sampling import FrameSampler, parse_rate, parse_time

    try:
        check_sources([source for _, source in videos])
        options = {"every": every, "fps": parse_rate(sample_fps) if sample_fps else None,
                   "start": parse_time(start, "--start") if start else None,
                   "duration": parse_time(duration, "--duration") if duration else None,
                   "track": track, "count": [CountingLine.parse(text) for text in count_lines],
                   "reconnect": reconnect, "batch": batch, "workers": workers, "streams": streams}
        FrameSampler(every=options["every"], fps=options["fps"])    # --every with --fps: one clear line
    except CaffessdError as exc:    # a misused option: a usage error (exit 2), as click's own
        raise click.UsageError(str(exc)) from None
    return VideoJob(options=options, write_video=write_video)


def _detect_videos(detector, videos, total, out_dir, json_lines, job, failures):
    """Each video in turn (caffessd.video.run); returns the exit status a
    signal asks for (130 Ctrl-C, 143 SIGTERM), else None."""
    from caffessd.video.run import describe, run_video, video_target
    from caffessd.video.stopping import SignalStop

    say = functools.partial(click.echo, err=True)
    with SignalStop(say) as stopper:
        for number, source in videos:
            target = video_target(out_dir, number, source, total)
            try:
                outcome = run_video(detector, source, target, json_lines, job, stopper.event, say)
            except FormatError as exc:
                failures.append(str(exc))
                continue
            for line in describe(outcome):
                click.echo(line)
            if outcome.video is not None:
                click.echo(f"wrote the annotated video {outcome.video} ({outcome.frames} frames)", err=True)
            if outcome.error:
                failures.append(outcome.error)
            if stopper.event.is_set():
                where = f"; {json_lines.path} holds its {json_lines.lines} line(s)" if json_lines.lines else ""
                say(f"caffessd: stopped in {outcome.source} after {outcome.frames} frame(s){where}")
                break
    return stopper.exit_status


def _say_when_preprocessing_is_assumed(prototxt):
    if net_preprocessing(prototxt).assumed:
        click.echo(f"caffessd: note: {prototxt} does not say how images are prepared (no caffessd note, no "
                   "train/test prototxt beside it): assuming mean 0, scale 1, BGR; --mean, --scale and "
                   "--rgb change that (MobileNet-SSD: --mean 127.5 --scale 0.007843)", err=True)


def _annotated_path(out_dir, index: int, path, total: int) -> Path:
    """Where an image's annotated copy goes: STEM.jpg, or NNNN_STEM.jpg among several."""
    stem = Path(path).stem
    return Path(out_dir) / (f"{stem}.jpg" if total == 1 else f"{index:04d}_{stem}.jpg")


def _refuse_overwriting_inputs(inputs, out_dir, json_target, video_job, models) -> None:
    """`detect photo.jpg --out .` would replace the photo by its annotated copy
    (named as the detect loop names it: STEM.jpg, or NNNN_STEM.jpg for several),
    `detect clip.mp4 --out .` the video by its annotated one, `--json
    W.caffemodel` the model (caffessd.util.outputs)."""
    from caffessd.video.inputs import IMAGE
    from caffessd.video.run import video_target

    total = len(inputs)
    outputs = [("--json", json_target)]
    for number, (kind, item) in enumerate(inputs):
        if kind == IMAGE:
            outputs.append(("the annotated image", _annotated_path(out_dir, number, item, total)))
        elif video_job is not None and video_job.write_video:
            outputs.append(("the annotated video", video_target(out_dir, number, item, total)))
    check_outputs(outputs, [("image" if kind == IMAGE else "video", item) for kind, item in inputs
                            if kind == IMAGE or os.path.isfile(str(item))] + list(models))


def _model_inputs(prototxt, weights, onnx_path, labels) -> list:
    """(label, path) of the model files a run reads (the embedded model's when none is given)."""
    if not (prototxt or onnx_path):
        from caffessd.inference.detector import default_model

        spec = default_model()
        prototxt, weights = spec.prototxt, spec.caffemodel
    return [("prototxt", prototxt), ("caffemodel", weights), ("model", onnx_path), ("labelmap", labels)]


def _report_interrupt(done: int, total: int, json_target, signal) -> None:
    kept = f"; their detections are in {json_target}" if json_target else ""
    what, status = ("terminated", 128 + Terminated.signal_number) if isinstance(signal, Terminated) \
        else ("interrupted", 130)
    click.echo(f"caffessd: {what} after {done} of {total} image(s){kept}", err=True)
    raise SystemExit(status)


def _preprocessing(prototxt, mean, scale, rgb):
    """Preprocessing from the options over the net's own, for a Caffe model;
    None keeps the model's own."""
    if mean is None and scale is None and rgb is None:
        return None
    if not prototxt:
        raise click.UsageError("--mean, --scale and --rgb apply to a Caffe model (--model); the embedded "
                               "model and exported files carry their own preprocessing")
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


def _detect_all(detector, paths, out_dir, load, batch, workers, streams, bar, results, failures, numbering=None,
                total=None):
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
            target = _annotated_path(out_dir, numbering[index] if numbering else index, path, total or len(paths))
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
