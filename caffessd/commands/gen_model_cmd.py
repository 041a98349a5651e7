"""`caffessd gen-model`: MobileNet-SSD / MobileNetV2-SSD / SSDLite nets for any input size.

A thin shell over caffessd.generators: options become an SSDConfig, which
validates itself; every file is built before the first one is written.
"""
from __future__ import annotations

import sys
from typing import List, Optional

import click

from caffessd.commands.options import parse_floats, parse_size
from caffessd.errors import CaffessdError
from caffessd.generators import SSDConfig, build_net, classes_from_labelmap, generate
from caffessd.generators.config import STAGES
from caffessd.generators.init_weights import learnable_layer_count
from caffessd.generators.build import NET_FILES, SOLVER_FILES
from caffessd.util.files import check_writable
from caffessd.util.outputs import check_outputs


def _bn_fraction(window: Optional[int]) -> Optional[float]:
    """--bn-window N as Caffe's moving_average_fraction: iteration k back weighs (1 - 1/N)^k."""
    if window is None:
        return None
    if window < 2:
        raise CaffessdError(f"--bn-window must be at least 2 iterations, got {window}")
    return round(1.0 - 1.0 / window, 6)


def parse_max_sizes(text: str) -> List[Optional[float]]:
    """'-,150,195' : '-' (or 0) for a head without max size."""
    values = []
    for item in text.split(","):
        item = item.strip()
        values.append(None if item in ("-", "0", "") else parse_floats(item, "--max-sizes")[0])
    return values


def parse_aspect_ratios(text: str) -> List[List[float]]:
    """'2,3' for every head, or '2;2,3;2,3' per head."""
    return [parse_floats(group, "--aspect-ratios") for group in text.split(";")]


@click.command("gen-model")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False), help="folder for the generated files")
@click.option("--backbone", default="mnv1", show_default=True, metavar="mnv1|mnv2", help="MobileNet v1 or v2")
@click.option("--head", default="ssd", show_default=True, metavar="ssd|ssdlite", help="plain or depthwise-separable heads")
@click.option("--width", default=1.0, show_default=True, type=float, help="width multiplier, 0.25 to 1.4")
@click.option("--min-depth", default=8, show_default=True, type=int,
              help="fewest channels of a backbone conv after --width (TF's SSD configs: 16)")
@click.option("--finegrain", is_flag=True, help="mnv2: Conv_1 keeps 1280 channels below width 1 (Keras MobileNetV2)")
@click.option("--extra-layers", metavar="depthwise|plain",
              help="extra layers: 1x1 + depthwise 3x3/2 + 1x1, or 1x1 + 3x3/2 [default: plain for mnv1 SSD, else depthwise]")
@click.option("--input", "input_size", default="300", show_default=True, help="input size: N or WIDTHxHEIGHT")
@click.option("--classes", type=int, help="number of classes, background included [default: 21, or from --labelmap]")
@click.option("--labelmap", type=click.Path(dir_okay=False), help="labelmap.prototxt: sets --classes and the data layers' label_map_file")
@click.option("--feature-layers", help="comma-separated blobs that get heads, shallow to deep")
@click.option("--min-scale", default=0.2, show_default=True, type=float, help="smallest prior scale (TF-OD-API sense)")
@click.option("--max-scale", default=0.95, show_default=True, type=float, help="largest prior scale (TF-OD-API sense)")
@click.option("--min-sizes", help="explicit min prior sizes in pixels, one per head (overrides the scales)")
@click.option("--max-sizes", help="explicit max prior sizes in pixels, one per head, '-' for none")
@click.option("--aspect-ratios", help="'2,3' for every head or '2;2,3;...' per head [default: 2 then 2,3; with --from-scratch 2,3]")
@click.option("--tf-lowest-anchors", is_flag=True, help="first head gets TensorFlow's lowest-layer boxes exactly")
@click.option("--clip", is_flag=True, help="clip priors to the image")
@click.option("--explicit-steps", is_flag=True, help="write PriorBox steps (input/map size) instead of letting PriorBox derive them")
@click.option("--mean", default="127.5", show_default=True, help="mean value, or B,G,R means")
@click.option("--scale", default=0.007843, show_default=True, type=float, help="input scale after mean subtraction")
@click.option("--stage", default="all", show_default=True, metavar="train|test|deploy|all", help="which nets to write")
@click.option("--lr", type=float, help="solver base learning rate [default: 0.0005 (RMSProp), --from-scratch 0.005 (Adam)]")
@click.option("--batch-size", default=24, show_default=True, type=int, help="train batch size")
@click.option("--iter-size", default=1, show_default=True, type=int, help="batches accumulated per iteration")
@click.option("--max-iter", type=int,
              help="length of the run in iterations; scales the lr steps, test and snapshot intervals (a tenth) "
                   "and the train net's BatchNorm averaging to it [default: the published 120000]")
@click.option("--snapshot", type=int, help="snapshot interval [default: 1000, or a tenth of --max-iter]")
@click.option("--from-scratch", is_flag=True,
              help="train from the fillers, not converted weights: Adam, poly decay to 0, every layer at the "
                   "full rate, small predictors and fan-out msra fillers, softmax class loss, BatchNorm statistics "
                   "of the recent iterations, crops and mirror only, 6 priors in the first head as in the others")
@click.option("--bn-window", type=int,
              help="iterations the train net's BatchNorm averages its running statistics over "
                   "(moving_average_fraction 1 - 1/N) [default: Caffe's 1000; with --max-iter or "
                   "--from-scratch, see docs/training-recipe.md]")
@click.option("--lmdb-train", default="trainval_lmdb", show_default=True, help="train LMDB path")
@click.option("--lmdb-test", default="test_lmdb", show_default=True, help="test LMDB path")
@click.option("--conf-loss", metavar="softmax|logistic", help="class loss [default: softmax for mnv1 and --from-scratch, logistic for mnv2]")
@click.option("--conf-threshold", type=float, help="deploy confidence threshold [default: 0.25, ssdlite 0.35]")
@click.option("--nms-threshold", type=float, default=0.45, show_default=True,
              help="DetectionOutput NMS overlap threshold of the test and deploy nets (each can be "
                   "overridden by the two options below)")
@click.option("--test-nms-threshold", type=float, help="NMS threshold of the test net only [--nms-threshold]")
@click.option("--deploy-nms-threshold", type=float,
              help="NMS threshold of the deploy net only [--nms-threshold] (published COCO nets: test 0.45, "
                   "deploy 0.6: --deploy-nms-threshold 0.6)")
@click.option("--top-k", type=int, help="boxes per class kept before NMS, test and deploy nets, -1 all "
                                        "[default: test 400, deploy 100]")
@click.option("--keep-top-k", type=int, help="boxes per image kept after NMS, test and deploy nets, -1 all "
                                             "[default: test 200, deploy 100]")
@click.option("--relu6", is_flag=True, help="ReLU6 activations (TensorFlow MobileNets)")
@click.option("--tf-pad", is_flag=True, help="emulate TensorFlow SAME padding on stride-2 convs")
@click.option("--bn", default="all", show_default=True, metavar="all|heads|none", help="where BatchNorm+Scale go")
@click.option("--dw-engine", default="default", show_default=True, metavar="caffe|default", help="engine of depthwise convs")
@click.option("--head-kernel", type=int, help="SSD head conv size, 1 or 3 [default: 1 for mnv1, 3 for mnv2]")
@click.option("--new-conf-layers", is_flag=True, help="name the class convs *_mbox_conf_new (fine-tuning to new classes)")
@click.option("--pretrained-lr-mult", type=float, help="train-net lr_mult of all but the class convs [default: 0.1 mnv1, 1 mnv2 and --from-scratch]")
@click.option("--init-weights", type=click.Path(dir_okay=False), help="also write this caffemodel, filled from the layer fillers")
@click.option("--seed", default=0, show_default=True, type=int, help="random seed of --init-weights")
def command(out_dir, backbone, head, width, min_depth, finegrain, extra_layers, input_size, classes, labelmap,
            feature_layers, min_scale, max_scale, min_sizes, max_sizes, aspect_ratios, tf_lowest_anchors, clip,
            explicit_steps, mean, scale, stage, lr, batch_size, iter_size, max_iter, snapshot, from_scratch,
            bn_window, lmdb_train, lmdb_test, conf_loss, conf_threshold, nms_threshold, test_nms_threshold,
            deploy_nms_threshold, top_k, keep_top_k, relu6, tf_pad, bn, dw_engine, head_kernel, new_conf_layers,
            pretrained_lr_mult, init_weights, seed):
    """Write train/test/deploy nets and solvers of a MobileNet-SSD, MobileNetV2-SSD or SSDLite detector.

    Example: caffessd gen-model --input 640 --backbone mnv2 --classes 2 -o out/

    From scratch, the whole recipe: caffessd gen-model ... --max-iter 2000 --from-scratch -o out/
    then caffessd train out/solver_train.prototxt
    """
    input_width, input_height = parse_size(input_size, "--input")
    num_classes = _num_classes(classes, labelmap)
    stages = STAGES if stage == "all" else (stage,)
    if stage != "all" and stage not in STAGES:
        raise CaffessdError(f"--stage must be one of {', '.join(STAGES)} or all, got '{stage}'")
    config = SSDConfig(
        backbone=backbone, head=head, width=width, min_depth=min_depth, finegrain=finegrain,
        extra_layers=extra_layers, input_width=input_width, input_height=input_height,
        num_classes=num_classes, labelmap=labelmap,
        feature_layers=[f.strip() for f in feature_layers.split(",") if f.strip()] if feature_layers is not None else None,
        min_scale=min_scale, max_scale=max_scale,
        min_sizes=parse_floats(min_sizes, "--min-sizes") if min_sizes else None,
        max_sizes=parse_max_sizes(max_sizes) if max_sizes else None,
        aspect_ratios=parse_aspect_ratios(aspect_ratios) if aspect_ratios else None,
        tf_lowest_layer_anchors=tf_lowest_anchors, clip=clip, explicit_steps=explicit_steps,
        mean=tuple(parse_floats(mean, "--mean")), scale=scale, lr=lr, batch_size=batch_size,
        iter_size=iter_size, max_iter=max_iter, snapshot=snapshot, from_scratch=from_scratch,
        bn_moving_average=_bn_fraction(bn_window),
        lmdb_train=lmdb_train, lmdb_test=lmdb_test,
        conf_loss=conf_loss, conf_threshold=conf_threshold, relu6=relu6, tf_pad=tf_pad, bn=bn,
        dw_engine=dw_engine, head_kernel=head_kernel, new_conf_layers=new_conf_layers,
        pretrained_lr_mult=pretrained_lr_mult, nms_threshold=nms_threshold,
        test_nms_threshold=test_nms_threshold, deploy_nms_threshold=deploy_nms_threshold,
        **_detection_counts(top_k, keep_top_k),
    )
    check_writable(out_dir, folder=True)
    _refuse_overwriting_labelmap(out_dir, stages, init_weights, labelmap)
    if init_weights:
        check_writable(init_weights)
        total = learnable_layer_count(build_net(config, "deploy"))
        # A bar on a terminal only: piped stderr stays one error line when the write fails.
        bar = click.progressbar(length=total, label="initialising weights", file=sys.stderr,
                                hidden=not sys.stderr.isatty())
        with bar:
            written = generate(config, out_dir, stages, init_weights=init_weights, seed=seed,
                               progress=lambda _name: bar.update(1))
    else:
        written = generate(config, out_dir, stages)
    for path in written:
        click.echo(str(path))


def _refuse_overwriting_labelmap(out_dir, stages, init_weights, labelmap) -> None:
    """The one input gen-model reads must not be among the files it writes (caffessd.util.outputs)."""
    from pathlib import Path

    written = [Path(out_dir) / NET_FILES[stage] for stage in stages]
    written += [Path(out_dir) / SOLVER_FILES[kind] for kind in ("train", "test") if kind in stages]
    check_outputs([("-o", path) for path in written] + [("--init-weights", init_weights)], [("labelmap", labelmap)])


def _detection_counts(top_k: Optional[int], keep_top_k: Optional[int]) -> dict:
    """--top-k / --keep-top-k set the test and deploy nets alike; unset, each keeps its default."""
    counts = {}
    if top_k is not None:
        counts.update(test_top_k=top_k, deploy_top_k=top_k)
    if keep_top_k is not None:
        counts.update(test_keep_top_k=keep_top_k, deploy_keep_top_k=keep_top_k)
    return counts


def _num_classes(classes: Optional[int], labelmap: Optional[str]) -> int:
    if labelmap is None:
        return 21 if classes is None else classes
    from_labelmap = classes_from_labelmap(labelmap)
    if classes is not None and classes != from_labelmap:
        raise CaffessdError(f"--classes {classes} disagrees with --labelmap {labelmap}, which has {from_labelmap} classes")
    return from_labelmap
