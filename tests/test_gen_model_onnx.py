"""Generated deploy nets through caffessd's ONNX path agree with OpenCV 4.x.

Same grid as test_gen_model_grid. For every net with --init-weights:
mbox_priorbox and every head's loc/conf conv output agree within 1e-4 of the
tensor's largest magnitude (at least 1e-4 absolute); detection_out rows agree
within 1e-4 where the comparison is well posed: every head compared and
|mbox_loc| < 10. (Random weights often give huge offsets, boxes decoded to
1e33 or inf and scores tied at 1.0, where NMS order is arbitrary. OpenCV pads
detection_out with all-zero rows up to keep_top_k and Caffe's ONNX form writes
a -1 row when nothing is found, so only rows with a score are compared.)

Left out: SSDLite heads on maps one pixel high or wide. OpenCV 4.14 computes a
3x3 depthwise convolution wrongly on such maps (checked against numpy; errors
of the order of the values, sometimes uninitialised memory), while the ONNX
path agrees with numpy there.
"""
import cv2
import numpy as np
import pytest

from caffessd.generators import SSDConfig, build_net, init_weights, plan_net
from caffessd import inference, onnxconv
from caffessd.net import Net
from caffessd.protoio import write_caffemodel, write_prototxt
from test_gen_model_grid import grid, label

TOL = 1e-4


def assert_close(ours, reference, what):
    assert ours.shape == reference.shape, what
    if reference.size == 0:
        return
    bound = TOL * max(1.0, float(np.abs(reference).max()))
    assert float(np.abs(ours - reference).max()) <= bound, what


def opencv_trusted(config, size):
    return not (config.head == "ssdlite" and min(size) == 1)


@pytest.mark.parametrize("options", grid(), ids=label)
def test_onnx_path_matches_opencv(options, tmp_path):
    check_onnx_matches_opencv(SSDConfig(**options), tmp_path)


def check_onnx_matches_opencv(config, tmp_path):
    """Run `config`'s deploy net (random init weights) in OpenCV and the ONNX path; compare."""
    plan = plan_net(config)
    deploy = build_net(config, "deploy")
    write_prototxt(deploy, tmp_path / "deploy.prototxt")
    write_caffemodel(init_weights(deploy, seed=1), tmp_path / "init.caffemodel")
    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, config.input_height, config.input_width)).astype(np.float32)

    heads = [f"{f}_mbox_{kind}" for f, size in zip(plan.feature_layers, plan.feature_sizes)
             if opencv_trusted(config, size) for kind in ("loc", "conf")]
    names = heads + ["mbox_priorbox", "mbox_loc"]
    cv_net = cv2.dnn.readNetFromCaffe(str(tmp_path / "deploy.prototxt"), str(tmp_path / "init.caffemodel"))
    cv_net.setInput(image)
    opencv = dict(zip(names + ["detection_out"], cv_net.forward(names + ["detection_out"])))
    net = Net.load(tmp_path / "deploy.prototxt", tmp_path / "init.caffemodel")
    onnx = inference.run_onnx(onnxconv.to_onnx(net, extra_outputs=names), {"data": image})

    all_heads = len(heads) == 2 * len(plan.feature_layers)
    for name in names:
        if name != "mbox_loc" or all_heads:
            assert_close(onnx[name], opencv[name], name)
    if all_heads and np.abs(opencv["mbox_loc"]).max() < 10:
        assert_close(scored_rows(onnx["detection_out"]), scored_rows(opencv["detection_out"]), "detection_out")


def scored_rows(detections):
    rows = detections[0, 0]
    rows = rows[rows[:, 2] > 0]
    return rows[np.lexsort((rows[:, 1], -rows[:, 2]))]
