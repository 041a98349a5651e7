"""Options that make a generated net compute what a TensorFlow SSD computes.

- `tf_lowest_layer_anchors` + TF-OD-API scales: OpenCV's PriorBox output equals
  the anchors of TF's SSD anchor generator (create_ssd_anchors with
  reduce_boxes_in_lowest_layer; square in pixels on non-square inputs), the
  lowest layer box for box in TF's order, the others as the same set per cell
  (Caffe orders a cell's boxes differently). Tolerance 1e-6.
- `tf_pad`: the pad-2-then-Slice pattern gives TensorFlow's SAME padding on
  stride-2 convs, checked against tf.nn.conv2d / depthwise_conv2d on an input
  whose height is even and width odd (rows sliced, columns not). Tolerance 1e-4.
"""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from caffessd.generators import SSDConfig, build_net, init_weights, plan_net
from caffessd.protoio import blob_to_array, write_caffemodel, write_prototxt


def tf_ssd_anchors(feature_sizes, height, width, min_scale, max_scale):
    """TF-OD-API's multiple grid anchors, per head as (cells, boxes, [xmin, ymin, xmax, ymax])."""
    count = len(feature_sizes)
    scales = [min_scale + (max_scale - min_scale) * i / (count - 1) for i in range(count)] + [1.0]
    base_h, base_w = min(height, width) / height, min(height, width) / width
    heads = []
    for layer, (rows, cols) in enumerate(feature_sizes):
        scale, following = scales[layer], scales[layer + 1]
        if layer == 0:
            specs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            specs = [(scale, ar) for ar in (1.0, 2.0, 0.5, 3.0, 1.0 / 3)] + [(np.sqrt(scale * following), 1.0)]
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
        boxes = []
        for s, ar in specs:
            h, w = s / np.sqrt(ar) * base_h, s * np.sqrt(ar) * base_w
            boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1).reshape(-1, 4))
        heads.append(np.stack(boxes, axis=1))
    return heads


def deploy_in_opencv(config, tmp_path, seed=3):
    deploy = build_net(config, "deploy")
    model = init_weights(deploy, seed=seed)
    write_prototxt(deploy, tmp_path / "deploy.prototxt")
    write_caffemodel(model, tmp_path / "init.caffemodel")
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "deploy.prototxt"), str(tmp_path / "init.caffemodel"))
    return net, {layer.name: [blob_to_array(b) for b in layer.blobs] for layer in model.layer}


def _sorted_boxes(cell_boxes):
    return cell_boxes[np.lexsort(cell_boxes.T[::-1])]


@pytest.mark.parametrize("width, height, min_scale, max_scale", [(300, 300, 0.2, 0.95), (320, 240, 0.15, 0.9)])
def test_priors_equal_tf_anchor_generator(tmp_path, width, height, min_scale, max_scale):
    config = SSDConfig(backbone="mnv2", head="ssdlite", input_width=width, input_height=height, num_classes=3,
                       min_scale=min_scale, max_scale=max_scale, tf_lowest_layer_anchors=True, tf_pad=True,
                       relu6=True, bn="heads", width=0.5)
    plan = plan_net(config)
    net, _ = deploy_in_opencv(config, tmp_path)
    net.setInput(np.zeros((1, 3, height, width), np.float32))
    priors = net.forward("mbox_priorbox")
    expected = tf_ssd_anchors(plan.feature_sizes, height, width, min_scale, max_scale)
    assert priors.shape == (1, 2, 4 * sum(e.shape[0] * e.shape[1] for e in expected))
    variances = np.tile(np.float32([0.1, 0.1, 0.2, 0.2]), (priors.shape[2] // 4, 1))
    np.testing.assert_array_equal(priors[0, 1].reshape(-1, 4), variances)

    start = 0
    for head, tf_boxes in enumerate(expected):
        cells, boxes, _ = tf_boxes.shape
        ours = priors[0, 0, start:start + cells * boxes * 4].reshape(cells, boxes, 4)
        start += cells * boxes * 4
        if head == 0:  # the composite PriorBox keeps TF's order
            np.testing.assert_allclose(ours, tf_boxes, atol=1e-6, err_msg="lowest layer")
        else:
            for cell in range(cells):
                np.testing.assert_allclose(_sorted_boxes(ours[cell]), _sorted_boxes(tf_boxes[cell]), atol=1e-6,
                                           err_msg=f"head {head} cell {cell}")


# TensorFlow runs in a child process: loaded into the test process it makes a
# later grpc_tools protoc call (test_proto_sync) crash.
TF_SAME_CONVS = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
data = np.load(sys.argv[1])
def nhwc(x):
    return tf.constant(np.transpose(x, (0, 2, 3, 1)))
def nchw(x):
    return np.transpose(x.numpy(), (0, 3, 1, 2))
conv = tf.nn.conv2d(nhwc(data["image"]), np.transpose(data["conv_w"], (2, 3, 1, 0)), strides=2, padding="SAME")
dw = tf.nn.depthwise_conv2d(nhwc(data["expanded"]), np.transpose(data["dw_w"], (2, 3, 0, 1)), strides=[1, 2, 2, 1],
                            padding="SAME")
np.savez(sys.argv[2], conv=nchw(tf.nn.relu6(conv + data["conv_b"])), dw=nchw(tf.nn.relu6(dw + data["dw_b"])))
"""


def test_tf_pad_matches_tensorflow_same_padding(tmp_path):
    config = SSDConfig(backbone="mnv2", head="ssdlite", input_width=321, input_height=240, num_classes=2,
                       tf_pad=True, relu6=True, bn="none", width=0.5, feature_layers=["conv_13/expand", "Conv_1"])
    net, weights = deploy_in_opencv(config, tmp_path)
    image = np.random.default_rng(4).uniform(-1, 1, (1, 3, 240, 321)).astype(np.float32)
    net.setInput(image)
    conv, expanded, depthwise = net.forward(["Conv/relu", "conv_1/expand/relu", "conv_1/depthwise/relu"])
    assert conv.shape[2:] == (120, 161) and depthwise.shape[2:] == (60, 81)

    (conv_w, conv_b), (dw_w, dw_b) = weights["Conv"], weights["conv_1/depthwise"]
    np.savez(tmp_path / "in.npz", image=image, expanded=expanded, conv_w=conv_w, conv_b=conv_b, dw_w=dw_w, dw_b=dw_b)
    subprocess.run([sys.executable, "-c", TF_SAME_CONVS, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   check=True)
    expected = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(conv, expected["conv"], atol=1e-4)
    np.testing.assert_allclose(depthwise, expected["dw"], atol=1e-4)
