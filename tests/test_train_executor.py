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


def _bn_scale_net(after_conv: bool, global_stats=None, extra_reader: bool = False):
    """Input -> [1x1 conv] -> BatchNorm -> Scale (bias) as Caffe nets write them; `extra_reader`
    makes the BatchNorm write its own blob that a Concat also reads (no fusion then)."""
    from caffessd import caffe_pb2, protoio

    source = "same" if after_conv else "data"
    text = """
    name: "bnscale"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 4 dim: 5 dim: 6 } } }
    """
    if after_conv:  # a 1x1 convolution hands BatchNorm an NHWC tensor (the fused kernel's path)
        text += """layer { name: "same" type: "Convolution" bottom: "data" top: "same"
                   convolution_param { num_output: 4 kernel_size: 1 bias_term: false } }"""
    stats = "" if global_stats is None else f"use_global_stats: {str(global_stats).lower()}"
    bn_top = "normed" if extra_reader else source
    text += f"""
    layer {{ name: "bn" type: "BatchNorm" bottom: "{source}" top: "{bn_top}"
            batch_norm_param {{ moving_average_fraction: 0.8 eps: 0.001 {stats} }} }}
    layer {{ name: "scale" type: "Scale" bottom: "{bn_top}" top: "out" scale_param {{ bias_term: true }} }}
    """
    if extra_reader:
        text += """layer { name: "both" type: "Concat" bottom: "normed" bottom: "out" top: "both" }"""
    return protoio.parse_prototxt_text(text, caffe_pb2.NetParameter())


def _bn_scale_weights(seed=3):
    rng = np.random.default_rng(seed)
    return {"same": [rng.normal(0, 1, (4, 4, 1, 1)).astype(np.float32)],
            "bn": [rng.normal(0, 1, 4).astype(np.float32), rng.uniform(1, 3, 4).astype(np.float32),
                   np.array([1.7], np.float32)],
            "scale": [rng.uniform(0.5, 2, 4).astype(np.float32), rng.normal(0, 1, 4).astype(np.float32)]}


@pytest.mark.parametrize("phase,global_stats", [("TRAIN", None), ("TRAIN", True), ("TEST", None)],
                         ids=["train-batch-stats", "train-use-global-stats", "test"])
@pytest.mark.parametrize("after_conv", [False, True], ids=["nchw", "nhwc-kernel"])
def test_batch_norm_scale_pair_runs_fused_as_caffe(phase, global_stats, after_conv):
    """A BatchNorm+Scale pair runs as one op and gives Caffe's BatchNorm-then-Scale
    (batch_norm_layer.cpp, scale_layer.cpp) in numpy: output, gradients of the input,
    the Scale's blobs and the convolution, and the running sums. Batch statistics in
    TRAIN; use_global_stats (TRAIN) and TEST use sums / factor and pass no gradient
    through the statistics. Tolerance 1e-4 of each quantity's magnitude (float32)."""
    param = _bn_scale_net(after_conv, global_stats)
    weights = _bn_scale_weights()
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 2.0, (3, 4, 5, 6)).astype(np.float32)
    upstream = rng.normal(0, 1, (3, 4, 5, 6)).astype(np.float32)
    runs = {}
    for fuse in (True, False):
        store = ParamStore()
        net = TFNet(param, phase, store, initial={k: [a.copy() for a in v] for k, v in weights.items()})
        assert set(net.bn_scale) == {"bn"} and net.bn_scale["bn"].name == "scale"
        data = tf.constant(x)
        names = [name for name in ("same", "scale") if name in store.variables]
        variables = [v for name in names for v in store.variables[name]]
        layouts = [layout for name in names for layout in store.layouts[name]]   # the filter is kept as TF's HWIO
        with tf.GradientTape() as tape:
            tape.watch(data)
            ctx = net.forward({"data": data}, update_stats=True, fuse=fuse)
            out = ctx.get("out")
            objective = tf.reduce_sum(out * upstream)
        grads = tape.gradient(objective, [data] + variables)
        for variable, value in ctx.stat_updates:
            variable.assign(value)
        grads = [grads[0].numpy()] + [layout.to_caffe(g.numpy()) for g, layout in zip(grads[1:], layouts)]
        runs[fuse] = (out.numpy(), grads, [v.numpy() for v in store.variables["bn"]])

    # Caffe in numpy.
    w = weights["same"][0].reshape(4, 4)
    h = np.einsum("oc,nchw->nohw", w, x) if after_conv else x
    mean_sum, var_sum, factor = weights["bn"]
    gamma, beta = weights["scale"]
    uses_batch = phase == "TRAIN" and not global_stats
    m = 3 * 5 * 6
    if uses_batch:
        mean, var = h.mean(axis=(0, 2, 3)), h.var(axis=(0, 2, 3))
        stats = [mean_sum * 0.8 + mean, var_sum * 0.8 + var * m / (m - 1), factor * 0.8 + 1]
    else:
        mean, var = mean_sum / factor[0], var_sum / factor[0]
        stats = weights["bn"]
    c = lambda v: v[None, :, None, None]  # noqa: E731
    std = np.sqrt(var + 0.001)
    xhat = (h - c(mean)) / c(std)
    expected = xhat * c(gamma) + c(beta)
    d_gamma = (upstream * xhat).sum(axis=(0, 2, 3))
    d_beta = upstream.sum(axis=(0, 2, 3))
    d_xhat = upstream * c(gamma)
    if uses_batch:
        d_h = (d_xhat - d_xhat.mean(axis=(0, 2, 3), keepdims=True)
               - xhat * (d_xhat * xhat).mean(axis=(0, 2, 3), keepdims=True)) / c(std)
    else:
        d_h = d_xhat / c(std)
    if after_conv:
        reference_grads = [np.einsum("oc,nohw->nchw", w, d_h),
                           np.einsum("nohw,nchw->oc", d_h, x).reshape(4, 4, 1, 1), d_gamma, d_beta]
    else:
        reference_grads = [d_h, d_gamma, d_beta]

    def close(ours, theirs, what):
        bound = 1e-4 * max(1.0, float(np.abs(theirs).max()))
        assert float(np.abs(ours - theirs).max()) <= bound, what

    for fuse, (out, grads, bn_blobs) in runs.items():
        close(out, expected, f"output fuse={fuse}")
        for k, (g, r) in enumerate(zip(grads, reference_grads)):
            close(g, r, f"gradient {k} fuse={fuse}")
        for k, (s, r) in enumerate(zip(bn_blobs, stats)):
            close(s, np.asarray(r, np.float32), f"BatchNorm blob {k} fuse={fuse}")


def test_batch_norm_whose_output_another_layer_reads_is_not_fused():
    """The normalised blob is needed on its own (a Concat reads it): the pair runs as two layers."""
    param = _bn_scale_net(after_conv=True, extra_reader=True)
    weights = _bn_scale_weights()
    net = TFNet(param, "TRAIN", ParamStore(), initial=weights)
    assert net.bn_scale == {}
    x = np.random.default_rng(1).normal(0, 1, (3, 4, 5, 6)).astype(np.float32)
    ctx = net.forward({"data": tf.constant(x)})
    normed, out = ctx.get("normed").numpy(), ctx.get("out").numpy()
    gamma, beta = weights["scale"]
    np.testing.assert_allclose(out, normed * gamma[None, :, None, None] + beta[None, :, None, None], atol=1e-5)
    np.testing.assert_allclose(ctx.get("both").numpy(), np.concatenate([normed, out], axis=1), atol=0)


def test_generated_nets_fuse_every_batch_norm_scale_pair():
    """gen-model's BatchNorm layers all have their Scale fused (in place, per channel)."""
    for backbone, head in (("mnv1", "ssd"), ("mnv2", "ssdlite")):
        train, _ = nets(small_config(backbone, head, size=64))
        net = TFNet(train, "TRAIN", ParamStore(), initial=initial_weights(train))
        count = sum(1 for layer in train.layer if layer.type == "BatchNorm")
        assert count > 10 and len(net.bn_scale) == count


def test_convolution_padding_modes_follow_caffe():
    """Caffe's symmetric padding expressed as VALID, SAME (where TensorFlow's SAME pads the
    same cells) or tf.pad + VALID: every case equals the ONNX path (Caffe's arithmetic) within 1e-4."""
    from caffessd import caffe_pb2, protoio
    from caffessd.train.executor.conv import _padding_mode

    assert _padding_mode([0, 0], [1, 1], [1, 1], [1, 1], [8, 8], [8, 8]) == "VALID"
    assert _padding_mode([1, 1], [3, 3], [1, 1], [1, 1], [8, 8], [8, 8]) == "SAME"
    assert _padding_mode([1, 1], [3, 3], [2, 2], [1, 1], [9, 9], [5, 5]) == "SAME"     # odd size, stride 2
    assert _padding_mode([1, 1], [3, 3], [2, 2], [1, 1], [8, 8], [4, 4]) is None       # SAME would pad (0, 1)
    assert _padding_mode([2, 2], [3, 3], [1, 1], [2, 2], [8, 8], [8, 8]) == "SAME"     # dilated
    text = """
    name: "pads"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 10 dim: 9 } } }
    """
    convs = {  # name: (num_output, kernel, stride, pad, group, dilation)
        "same": (4, 3, 1, 1, 1, 1), "even_s2": (6, 3, 2, 1, 1, 1), "point": (5, 1, 1, 0, 1, 1),
        "dw_s2": (4, 3, 2, 1, 4, 1), "dw_s1": (8, 3, 1, 1, 4, 1), "dilated": (3, 3, 1, 2, 1, 2),
        "narrow": (3, 5, 1, 1, 1, 1), "wide_pad": (3, 3, 2, 2, 1, 1),
        "grouped": (6, 3, 1, 1, 2, 1)}  # groups that are not depthwise: kept in Caffe's layout, split
    for name, (out, k, s, p, g, d) in convs.items():
        text += f"""layer {{ name: "{name}" type: "Convolution" bottom: "data" top: "{name}"
                   convolution_param {{ num_output: {out} kernel_size: {k} stride: {s} pad: {p} group: {g}
                                        dilation: {d} }} }}\n"""
    param = protoio.parse_prototxt_text(text, caffe_pb2.NetParameter())
    rng = np.random.default_rng(4)
    weights = {name: [rng.normal(0, 1, (out, 4 // g, k, k)).astype(np.float32), rng.normal(0, 1, out).astype(np.float32)]
               for name, (out, k, s, p, g, d) in convs.items()}
    x = rng.normal(0, 1, (2, 4, 10, 9)).astype(np.float32)
    ctx = TFNet(param, "TEST", ParamStore(), initial=weights).forward({"data": tf.constant(x)})
    reference = Net(param)
    reference.attach_weights(caffemodel_of(weights))
    onnx = inference.run_onnx(onnxconv.to_onnx(reference, extra_outputs=list(convs)), {"data": x})
    for name in convs:
        ours, theirs = ctx.get(name).numpy(), onnx[name]
        assert ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, atol=1e-4 * max(1.0, float(np.abs(theirs).max())), err_msg=name)
