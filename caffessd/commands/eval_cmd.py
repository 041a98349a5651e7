"""`caffessd eval`: mAP of one or several models on a dataset (a thin shell
over caffessd.eval)."""
from pathlib import Path

import click

from caffessd.commands.options import engine_options, layout_options
from caffessd.datasets.open import FORMATS
from caffessd.eval.report import require_report_folder, table, write_report
from caffessd.eval.runner import EVAL_SPLITS, evaluate_models
from caffessd.util.files import check_writable
from caffessd.util.outputs import Input, Output, check_outputs

METRIC_CHOICES = ["voc07", "voc12", "integral", "coco", "wider"]


@click.command("eval")
@click.argument("onnx_models", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--model", "prototxts", multiple=True, type=click.Path(dir_okay=False),
              help="Caffe deploy prototxt (repeatable, each with a --weights)")
@click.option("--weights", multiple=True, type=click.Path(dir_okay=False), help="caffemodel (with --model)")
@click.option("--dataset", required=True, type=click.Path(), help="dataset root, list file or LMDB")
@click.option("--format", "dataset_format", required=True,
              type=click.Choice(FORMATS), help="dataset layout")
@click.option("--split", help="dataset split (voc: test, coco: val2017, wider: val, ...)")
@layout_options
@click.option("--labelmap", type=click.Path(dir_okay=False), help="labelmap.prototxt naming the model's label ids")
@click.option("--metric", type=click.Choice(METRIC_CHOICES),
              help="voc07 (11point), voc12 (MaxIntegral), integral, coco, wider [default: wider for "
                   "--format wider, coco for coco, else voc07]")
@click.option("--iou", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="IoU for a true positive (VOC metrics)")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="detections below this score are dropped")
@click.option("--limit", type=click.IntRange(min=1), help="evaluate only the first N images")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="eval_report", show_default=True,
              help="report folder (report.json, PR curve PNGs, COCO results JSON, WIDER result folders)")
@click.option("--wider-gt", type=click.Path(file_okay=False),
              help="the WIDER toolbox's ground_truth folder (wider_face_val.mat, wider_{easy,medium,hard}_val.mat)")
@click.option("--threads", type=click.IntRange(min=1), help="inference threads (onnxruntime intra-op, OpenVINO, ...)")
@engine_options
@click.option("--allow-outside-root", is_flag=True,
              help="read images and annotations that entries name outside the dataset folder "
                   "(absolute paths, '..', links leading out); refused by default")
def command(onnx_models, prototxts, weights, dataset, dataset_format, split, images, annotations, labelmap,
            metric, iou, threshold, limit, out_dir, wider_gt, threads, engine, device, precision, allow_outside_root):
    """Evaluate MODELS (exported files: .onnx, OpenVINO .xml, ncnn .param, .tflite;
    and/or --model/--weights pairs; none: the embedded face detector) on a
    dataset; several models are compared side by side."""
    import shutil
    import tempfile

    if len(prototxts) != len(weights):
        raise click.UsageError("each --model needs its --weights (in the same order)")
    models = list(onnx_models) + list(zip(prototxts, weights))
    if not models:
        models = [None]   # the embedded face detector
    metric = metric or {"wider": "wider", "coco": "coco"}.get(dataset_format, "voc07")
    split = split or EVAL_SPLITS.get(dataset_format)
    # Fail before the models run. The report folder replaces --out as a whole: it must not hold an input.
    check_writable(out_dir, folder=True)
    inputs = [Input("dataset", dataset, sealed=dataset_format == "lmdb"), Input("labelmap", labelmap),
              Input("--wider-gt folder", wider_gt)]
    inputs += [Input("model", path) for path in list(onnx_models) + list(prototxts) + list(weights)]
    check_outputs([Output("--out", out_dir, replaces=True)], inputs)
    require_report_folder(out_dir)
    work = Path(tempfile.mkdtemp(prefix="caffessd-eval-"))
    try:
        results = evaluate_models(models, dataset, metric, format=dataset_format, split=split, labelmap=labelmap,
                                  iou=iou, threshold=threshold, limit=limit, wider_gt=wider_gt, work_dir=work,
                                  threads=threads, engine=engine, device=device, precision=precision,
                                  allow_outside=allow_outside_root, images=images, annotations=annotations)
        report = write_report(results, out_dir, extra_files_from=work,
                              settings={"dataset": str(dataset), "format": dataset_format, "split": split,
                                        "metric": metric, "iou": iou, "threshold": threshold, "limit": limit,
                                        "engine": engine, "device": device, "precision": precision})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    click.echo(table(results))
    note = report.get("plots_note")
    click.echo(f"wrote {out_dir}/report.json" + (f" and {len(report['plots'])} PR curve plot(s)" if not note else ""),
               err=True)
    if note:
        click.echo(note, err=True)
