"""The TensorFlow executor of caffessd.train against the ONNX path (onnxruntime).

TEST phase: the generated test nets (both backbones, both heads, random
filler weights and random BatchNorm statistics) give the same mbox_loc,
mbox_conf, mbox_conf_flatten (softmax) and mbox_priorbox as the ONNX
converter run by onnxruntime, within 1e-4 of each blob's largest magnitude
(at least 1).
TRAIN phase BatchNorm: batch statistics and Caffe's moving-average update
(batch_norm_layer.cpp) against numpy.
"""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from caffessd import inference, onnxconv  # noqa: E402
from caffessd.net import Net, filter_phase  # noqa: E402
from caffessd.train.executor import ParamStore, TFNet, initial_weights  # noqa: E402
from train_helpers import caffemodel_of, nets, random_bn_statistics, small_config  # noqa: E402

TOL = 1e-4


@pytest.mark.parametrize("backbone,head", [("mnv1", "ssd"), ("mnv2", "ssdlite"), ("mnv2", "ssd")])
def test_test_phase_forward_matches_onnx(backbone, head):
    config = small_config(backbone, head, size=96, relu6=backbone == "mnv2")
    train, test = nets(config)
    weights = random_bn_statistics(initial_weights(train, seed=3), seed=4)
    net = TFNet(test, "TEST", ParamStore(), initial=weights)
    image = np.random.default_rng(0).uniform(-1, 1, (2, 3, 96, 96)).astype(np.float32)
    ctx = net.forward({"data": tf.constant(image)})

    reference = Net(filter_phase(test, "TEST"))
    reference.attach_weights(caffemodel_of(weights))
    names = ["mbox_loc", "mbox_conf", "mbox_conf_flatten"]
    model = onnxconv.to_onnx(reference, raw=True, extra_outputs=names)
    onnx = inference.run_onnx(model, {"data": image})
    onnx["mbox_priorbox"] = onnx["priors"]
    for name in names + ["mbox_priorbox"]:
        ours = ctx.get(name).numpy()
        theirs = onnx[name]
        assert ours.shape == theirs.shape, name
        bound = TOL * max(1.0, float(np.abs(theirs).max()))
        assert float(np.abs(ours - theirs).max()) <= bound, name


@pytest.mark.parametrize("after_conv", [False, True], ids=["nchw", "nhwc-fused"])
def test_batch_norm_training_uses_batch_statistics_and_caffe_moving_averages(after_conv):
    """Both BatchNorm paths: on a fed NCHW blob and on a convolution's NHWC output (fused kernel)."""
    from caffessd import caffe_pb2, protoio

    source = "data"
    text = """
    name: "bn"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 4 dim: 5 dim: 6 } } }
    """
    if after_conv:  # an identity 1x1 convolution hands BatchNorm an NHWC tensor
        text += """layer { name: "same" type: "Convolution" bottom: "data" top: "same"
                   convolution_param { num_output: 4 kernel_size: 1 bias_term: false } }"""
        source = "same"
    text += """
    layer { name: "bn" type: "BatchNorm" bottom: "%s" top: "bn"
            batch_norm_param { moving_average_fraction: 0.9 eps: 0.01 } }
    """ % source
    param = protoio.parse_prototxt_text(text, caffe_pb2.NetParameter())
    start = [np.arange(4, dtype=np.float32), np.full(4, 2.0, np.float32), np.array([1.5], np.float32)]
    store = ParamStore()
    initial = {"bn": start, "same": [np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1)]}
    net = TFNet(param, "TRAIN", store, initial=initial)
    x = np.random.default_rng(1).normal(2.0, 3.0, (3, 4, 5, 6)).astype(np.float32)
    ctx = net.forward({"data": tf.constant(x)}, update_stats=True)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    expected = (x - mean[None, :, None, None]) / np.sqrt(var + 0.01)[None, :, None, None]
    np.testing.assert_allclose(ctx.get("bn").numpy(), expected, atol=1e-4)
    for variable, value in ctx.stat_updates:
        variable.assign(value)
    m = 3 * 5 * 6
    np.testing.assert_allclose(store.variables["bn"][2].numpy(), [1.5 * 0.9 + 1], rtol=1e-6)
    np.testing.assert_allclose(store.variables["bn"][0].numpy(), start[0] * 0.9 + mean, rtol=1e-5)
    np.testing.assert_allclose(store.variables["bn"][1].numpy(), start[1] * 0.9 + var * m / (m - 1), rtol=1e-5)
    # TEST phase of the same net: the stored sums divided by the factor.
    test_ctx = TFNet(param, "TEST", store).forward({"data": tf.constant(x)})
    factor = 1.5 * 0.9 + 1
    stored_mean = (start[0] * 0.9 + mean) / factor
    stored_var = (start[1] * 0.9 + var * m / (m - 1)) / factor
    expected = (x - stored_mean[None, :, None, None]) / np.sqrt(stored_var + 0.01)[None, :, None, None]
    np.testing.assert_allclose(test_ctx.get("bn").numpy(), expected, atol=1e-4)


def test_pooling_and_inner_product_follow_caffe():
    """Ceil-mode MAX/AVE pooling with padding and InnerProduct, checked against the ONNX path."""
    from caffessd import caffe_pb2, protoio

    text = """
    name: "pool"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 7 dim: 8 } } }
    layer { name: "mp" type: "Pooling" bottom: "data" top: "mp" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
    layer { name: "ap" type: "Pooling" bottom: "data" top: "ap" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
    layer { name: "gconv" type: "Convolution" bottom: "data" top: "gconv"
            convolution_param { num_output: 6 kernel_size: 3 group: 3 pad: 2 dilation: 2 } }
    layer { name: "fc" type: "InnerProduct" bottom: "mp" top: "fc" inner_product_param { num_output: 5 } }
    """
    param = protoio.parse_prototxt_text(text, caffe_pb2.NetParameter())
    rng = np.random.default_rng(2)
    weights = {"gconv": [rng.normal(0, 1, (6, 1, 3, 3)).astype(np.float32), rng.normal(0, 1, 6).astype(np.float32)],
               "fc": [rng.normal(0, 1, (5, 3 * 4 * 5)).astype(np.float32), rng.normal(0, 1, 5).astype(np.float32)]}
    net = TFNet(param, "TEST", ParamStore(), initial=weights)
    x = rng.normal(0, 1, (2, 3, 7, 8)).astype(np.float32)
    ctx = net.forward({"data": tf.constant(x)})
    reference = Net(param)
    reference.attach_weights(caffemodel_of(weights))
    onnx = inference.run_onnx(onnxconv.to_onnx(reference, extra_outputs=["mp", "ap", "gconv", "fc"]), {"data": x})
    for name in ("mp", "ap", "gconv", "fc"):
        np.testing.assert_allclose(ctx.get(name).numpy(), onnx[name], atol=1e-4, err_msg=name)
