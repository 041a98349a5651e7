"""Generated deploy nets with --init-weights run in OpenCV 4.x with the expected outputs.

Grid: both backbones x both heads x inputs 300, 512, 640, 320x240 (16 nets),
with classes (2, 91) and width (0.5, 1.0) assigned so that every pair of
values of any two of the five options occurs at least once (a pairwise-
covering subset, 5 to 15 s on 2 cores; the full 64-net product takes four times
as long).
Layer-style options vary along too (--tf-pad on 512 and 320x240, --relu6 on
mnv2, --bn all/heads/none in turn). Plus the 640 net of the seeds with its five
feature layers.

For each net: OpenCV (an independent Caffe implementation) loads prototxt and
caffemodel by layer name and runs; every head's loc/conf conv has 4k and
classes*k channels on its map; the PriorBox output holds exactly
sum over heads of cells x boxes per cell priors, which is also what
`plan_net` predicts; mbox_loc/conf/priorbox/detection_out have the shapes
DetectionOutput expects.
"""
import cv2
import numpy as np
import pytest

from caffessd.generators import SSDConfig, build_net, init_weights, plan_net
from caffessd.protoio import write_caffemodel, write_prototxt

INPUTS = [(300, 300), (512, 512), (640, 640), (320, 240)]


def grid():
    rows = []
    for j, backbone in enumerate(("mnv1", "mnv2")):
        for k, head in enumerate(("ssd", "ssdlite")):
            for i, (width_px, height_px) in enumerate(INPUTS):
                rows.append(dict(
                    backbone=backbone, head=head, input_width=width_px, input_height=height_px,
                    num_classes=(2, 91)[(i + j + k) % 2], width=(0.5, 1.0)[(i // 2 + j + k) % 2],
                    tf_pad=i % 2 == 1, relu6=backbone == "mnv2", bn=("all", "heads", "none")[(i + j) % 3]))
    rows.append(dict(backbone="mnv2", head="ssdlite", input_width=640, input_height=640, num_classes=2,
                     feature_layers=["conv_13/expand", "Conv_1", "layer_19_2_2", "layer_19_2_3", "layer_19_2_4"]))
    return rows


def label(options):
    return "{backbone}-{head}-{input_width}x{input_height}-c{num_classes}-w{width}".format(**{"width": 1.0, **options})


def run_opencv(config, tmp_path):
    deploy = build_net(config, "deploy")
    write_prototxt(deploy, tmp_path / "deploy.prototxt")
    write_caffemodel(init_weights(deploy, seed=1), tmp_path / "init.caffemodel")
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "deploy.prototxt"), str(tmp_path / "init.caffemodel"))
    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, config.input_height, config.input_width))
    net.setInput(image.astype(np.float32))
    return net


@pytest.mark.parametrize("options", grid(), ids=label)
def test_deploy_net_runs_in_opencv(options, tmp_path):
    config = SSDConfig(**options)
    plan = plan_net(config)
    classes = config.num_classes
    heads = [name for f in plan.feature_layers for name in (f"{f}_mbox_loc", f"{f}_mbox_conf")]
    names = heads + ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox", "detection_out"]
    outputs = dict(zip(names, run_opencv(config, tmp_path).forward(names)))

    expected_priors = 0
    for feature, boxes in zip(plan.feature_layers, plan.boxes_per_cell):
        loc, conf = outputs[f"{feature}_mbox_loc"], outputs[f"{feature}_mbox_conf"]
        assert loc.shape[1] == 4 * boxes and conf.shape[1] == classes * boxes, feature
        assert loc.shape[2:] == conf.shape[2:]
        expected_priors += loc.shape[2] * loc.shape[3] * boxes
    assert plan.prior_count == expected_priors
    assert [tuple(outputs[f"{f}_mbox_loc"].shape[2:]) for f in plan.feature_layers] == plan.feature_sizes

    assert outputs["mbox_priorbox"].shape == (1, 2, expected_priors * 4)
    assert outputs["mbox_loc"].shape == (1, expected_priors * 4)
    assert outputs["mbox_conf_flatten"].shape == (1, expected_priors * classes)
    detections = outputs["detection_out"]
    assert detections.shape[:2] == (1, 1) and detections.shape[3] == 7 and detections.shape[2] <= 100
    assert np.isfinite(outputs["mbox_loc"]).all() and np.isfinite(outputs["mbox_conf_flatten"]).all()
