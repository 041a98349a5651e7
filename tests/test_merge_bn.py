"""Folding BatchNorm/Scale, one small net per failure mode of the classic merge_bn.py.

Each merged net is run against the unmerged one in OpenCV 4.x cv2.dnn (layer
fusion off, so BatchNorm and Scale run as Caffe defines them) and, when it is
available, in caffessd's ONNX path. Tolerance: 1e-4 relative to each output's
largest magnitude (observed differences are ~1e-7, float32 rounding).
"""
import numpy as np
import pytest

from caffessd.errors import FormatError

from caffessd.merge_bn import batchnorm_affine, fold_batchnorm
from caffessd.merge_bn.verify import compare_nets, random_feeds, run_onnx_path, run_opencv
from caffessd.net import Net
from merge_bn_helpers import (
    batchnorm, conv, header, inner_product, layer, net_with_random_weights, parse_net, relu, scale,
)

TOLERANCE = 1e-4


RUNNERS = [pytest.param(run_opencv, id="opencv"), pytest.param(run_onnx_path, id="onnx")]


def assert_equivalent(net: Net, result, runner=run_opencv, seed=1):
    rows = compare_nets(net, result.net(), random_feeds(net, seed), "random", runner)
    assert rows, "nothing was compared"
    for row in rows:
        if row.checked:
            assert row.max_rel <= TOLERANCE, row.line()
    return rows


def types(result):
    return [l.type for l in result.param.layer]


def layer_named(result, name):
    return next(l for l in result.param.layer if l.name == name)


# ---------------------------------------------------------------- the classic failures

@pytest.mark.parametrize("eps", [1e-3, 1e-5, None])
@pytest.mark.parametrize("factor", [0.0, 1.0, 3.7])
def test_conv_without_bias_gets_one(eps, factor):
    text = (header() + conv("c1", "data", "c1", bias=False) + batchnorm("c1/bn", "c1", "c1", eps=eps)
            + scale("c1/scale", "c1", "c1") + relu("c1/relu", "c1", "c1")
            + conv("c2", "c1", "c2", bias=False) + batchnorm("c2/bn", "c2", "c2", eps=eps)
            + scale("c2/scale", "c2", "c2", bias=False))
    net = net_with_random_weights(text, seed=2, scale_factor=factor)
    result = fold_batchnorm(net)
    assert types(result) == ["Convolution", "ReLU", "Convolution"]
    assert not result.skipped
    for name in ("c1", "c2"):
        assert layer_named(result, name).convolution_param.bias_term
        assert [w.shape for w in result.weights[name]] == [(8, 3 if name == "c1" else 8, 3, 3), (8,)]
    assert_equivalent(net, result)


@pytest.mark.parametrize("runner", RUNNERS)
def test_non_in_place_tops_are_rewired(runner):
    # BN and Scale write new blobs; two later layers read the Scale's output.
    text = (header() + conv("c1", "data", "c1") + batchnorm("bn1", "c1", "bn1_out")
            + scale("sc1", "bn1_out", "sc1_out") + relu("r1", "sc1_out", "r1_out")
            + conv("c2", "sc1_out", "c2", num_output=4) + conv("c3", "r1_out", "c3", num_output=4)
            + layer("sum", "Eltwise", ["c2", "c3"], ["sum"]))
    net = net_with_random_weights(text, seed=3)
    result = fold_batchnorm(net)
    assert types(result) == ["Convolution", "ReLU", "Convolution", "Convolution", "Eltwise"]
    assert list(layer_named(result, "c1").top) == ["sc1_out"]
    assert list(layer_named(result, "r1").bottom) == ["sc1_out"]
    assert list(layer_named(result, "c2").bottom) == ["sc1_out"]
    assert_equivalent(net, result, runner)


def test_batchnorm_after_data_is_kept():
    text = (header() + batchnorm("bn0", "data", "bn0") + scale("sc0", "bn0", "bn0")
            + conv("c1", "bn0", "c1") + batchnorm("bn1", "c1", "c1") + scale("sc1", "c1", "c1"))
    net = net_with_random_weights(text, seed=4)
    result = fold_batchnorm(net)
    assert types(result) == ["BatchNorm", "Scale", "Convolution"]
    reasons = {s.layer: s.reason for s in result.skipped}
    assert "net input 'data'" in reasons["bn0"]
    assert "follows BatchNorm 'bn0', which could not be folded" in reasons["sc0"]
    assert_equivalent(net, result)


def test_batchnorm_after_input_layer_is_kept():
    text = ('name: "t" layer { name: "data" type: "Input" top: "data" '
            'input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
            + batchnorm("bn0", "data", "data") + conv("c1", "data", "c1"))
    result = fold_batchnorm(net_with_random_weights(text, seed=5))
    assert [s.layer for s in result.skipped] == ["bn0"]
    assert "data layer Input 'data'" in result.skipped[0].reason


def test_eps_is_honoured_and_a_wrong_eps_is_caught():
    """The oracle is sharp enough: folding with the default eps instead of 1e-3 fails the check."""
    text = header() + conv("c1", "data", "c1", bias=False) + batchnorm("bn1", "c1", "c1", eps=1e-3)
    net = net_with_random_weights(text, seed=6)
    net.weights["bn1"][1] = net.weights["bn1"][1] * 1e-2   # small variances make eps matter
    assert_equivalent(net, fold_batchnorm(net))

    wrong = Net(parse_net(text.replace("eps: 0.001", "")), net.weights)
    rows = compare_nets(net, fold_batchnorm(wrong).net(), random_feeds(net, 1), "random", run_opencv)
    assert max(r.max_rel for r in rows) > 10 * TOLERANCE


def test_batchnorm_affine_matches_caffe_formula():
    param = parse_net(header() + batchnorm("bn", "data", "bn", eps=1e-3)).layer[0]
    mean, var, factor = np.array([2.0, -1.0]), np.array([8.0, 0.5]), np.array([4.0])
    a, c = batchnorm_affine(param, [mean, var, factor])
    x = np.array([3.0, 5.0])
    eps = float(np.float32(1e-3))   # eps is a proto float, as in Caffe
    expected = (x - mean / 4.0) / np.sqrt(var / 4.0 + eps)
    np.testing.assert_allclose(a * x + c, expected, rtol=1e-12)
    # Factor 0: Caffe's multiplier is 0 (not 1/0), so mean and variance vanish.
    a0, c0 = batchnorm_affine(param, [mean, var, np.array([0.0])])
    np.testing.assert_allclose(a0 * x + c0, x / np.sqrt(eps), rtol=1e-12)


@pytest.mark.parametrize("group, num_output", [(1, 6), (2, 6), (4, 12), (8, 8)])
@pytest.mark.parametrize("runner", RUNNERS)
def test_deconvolution(group, num_output, runner):
    text = (header((1, 8, 6, 6)) + conv("up", "data", "up", num_output=num_output, kernel=4, stride=2, pad=1,
                                          group=group, bias=False, kind="Deconvolution")
            + batchnorm("up/bn", "up", "up_bn", eps=1e-3) + scale("up/scale", "up_bn", "up_bn"))
    net = net_with_random_weights(text, seed=7 + group)
    result = fold_batchnorm(net)
    assert types(result) == ["Deconvolution"]
    weight, bias = result.weights["up"]
    assert weight.shape == (8, num_output // group, 4, 4) and bias.shape == (num_output,)
    assert_equivalent(net, result, runner)


def _inner_product_net(transpose):
    return (header((1, 4, 3, 3)) + inner_product("fc", "data", "fc", bias=False, transpose=transpose)
            + batchnorm("fc/bn", "fc", "fc", eps=1e-3) + scale("fc/scale", "fc", "fc")
            + relu("fc/relu", "fc", "fc") + inner_product("fc2", "fc", "fc2", num_output=5)
            + batchnorm("fc2/bn", "fc2", "fc2"))


@pytest.mark.parametrize("runner", RUNNERS)
def test_inner_product(runner):
    net = net_with_random_weights(_inner_product_net(transpose=False), seed=8)
    result = fold_batchnorm(net)
    assert types(result) == ["InnerProduct", "ReLU", "InnerProduct"]
    assert layer_named(result, "fc").inner_product_param.bias_term
    assert_equivalent(net, result, runner)


def test_transposed_inner_product():
    """OpenCV ignores inner_product_param.transpose, so the oracle here is numpy
    running Caffe's formulas: fc = x W (W stored K x N), BN, Scale."""
    net = net_with_random_weights(_inner_product_net(transpose=True), seed=8)
    result = fold_batchnorm(net)
    assert types(result) == ["InnerProduct", "ReLU", "InnerProduct"]
    x = random_feeds(net, 1)["data"].reshape(1, -1).astype(np.float64)
    w = {name: [np.asarray(b, np.float64) for b in blobs] for name, blobs in net.weights.items()}

    def batchnorm_ref(v, mean, var, factor, eps):
        k = 0.0 if factor[0] == 0 else 1.0 / factor[0]
        return (v - mean * k) / np.sqrt(var * k + eps)

    fc = x @ w["fc"][0]
    fc = batchnorm_ref(fc, *w["fc/bn"], float(np.float32(1e-3))) * w["fc/scale"][0] + w["fc/scale"][1]
    fc = np.maximum(fc, 0)
    expected = batchnorm_ref(fc @ w["fc2"][0].T + w["fc2"][1], *w["fc2/bn"], float(np.float32(1e-5)))

    m = {name: [np.asarray(b, np.float64) for b in blobs] for name, blobs in result.weights.items()}
    merged = np.maximum(x @ m["fc"][0] + m["fc"][1], 0) @ m["fc2"][0].T + m["fc2"][1]
    assert np.max(np.abs(merged - expected)) <= TOLERANCE * np.max(np.abs(expected))


@pytest.mark.parametrize("bias", [True, False])
def test_scale_alone(bias):
    def text(num_axes=None):
        return (header() + conv("c1", "data", "c1", bias=False) + scale("s1", "c1", "c1", bias, num_axes=num_axes)
                + conv("c2", "c1", "c2") + scale("s2", "c2", "s2", bias, num_axes=num_axes))
    net = net_with_random_weights(text(), seed=9)
    result = fold_batchnorm(net)
    assert types(result) == ["Convolution", "Convolution"]
    assert_equivalent(net, result)

    # A scalar Scale (num_axes: 0; OpenCV cannot load its 0-d blob) folds exactly
    # like a per-channel one holding the same value in every channel.
    scalar = net_with_random_weights(text(num_axes=0), seed=9)
    for name in ("s1", "s2"):
        net.weights[name] = [np.full(8, b.item(), np.float32) for b in scalar.weights[name]]
        assert scalar.weights[name][0].shape == ()
    for name in ("c1", "c2"):
        net.weights[name] = scalar.weights[name]
    expected = fold_batchnorm(net).weights
    for name, blobs in fold_batchnorm(scalar).weights.items():
        for got, want in zip(blobs, expected[name]):
            np.testing.assert_array_equal(got, want)


def test_batchnorm_alone():
    text = (header() + conv("c1", "data", "c1") + batchnorm("bn1", "c1", "bn1", eps=1e-3)
            + relu("r1", "bn1", "bn1") + conv("c2", "bn1", "c2"))
    net = net_with_random_weights(text, seed=10)
    result = fold_batchnorm(net)
    assert types(result) == ["Convolution", "ReLU", "Convolution"]
    assert list(layer_named(result, "c1").top) == ["bn1"]
    assert_equivalent(net, result)


# ---------------------------------------------------------------- cases that must not fold

def test_conv_output_with_second_consumer_before_bn():
    text = (header() + conv("c1", "data", "c1") + conv("side", "c1", "side")
            + batchnorm("bn1", "c1", "bn1") + scale("sc1", "bn1", "bn1")
            + layer("sum", "Eltwise", ["side", "bn1"], ["sum"]))
    net = net_with_random_weights(text, seed=11)
    result = fold_batchnorm(net)
    assert types(result) == ["Convolution", "Convolution", "BatchNorm", "Scale", "Eltwise"]
    reasons = {s.layer: s.reason for s in result.skipped}
    assert "also feeds 'side'" in reasons["bn1"]
    assert_equivalent(net, result)


def test_conv_output_read_again_after_a_non_in_place_bn():
    text = (header() + conv("c1", "data", "c1") + batchnorm("bn1", "c1", "bn1")
            + layer("sum", "Eltwise", ["c1", "bn1"], ["sum"]))
    net = net_with_random_weights(text, seed=12)
    result = fold_batchnorm(net)
    assert types(result) == ["Convolution", "BatchNorm", "Eltwise"]
    assert "also feeds 'sum'" in result.skipped[0].reason
    assert_equivalent(net, result)


@pytest.mark.parametrize("kind, extra", [("Concat", ""), ("Eltwise", "")])
def test_bn_after_concat_or_eltwise(kind, extra):
    text = (header() + conv("a", "data", "a") + conv("b", "data", "b")
            + layer("join", kind, ["a", "b"], ["join"], extra) + batchnorm("bn", "join", "join")
            + scale("sc", "join", "join") + conv("c", "join", "c"))
    net = net_with_random_weights(text, seed=13)
    result = fold_batchnorm(net)
    assert types(result) == ["Convolution", "Convolution", kind, "BatchNorm", "Scale", "Convolution"]
    reasons = {s.layer: s.reason for s in result.skipped}
    assert f"follows {kind} 'join', which has no weights" in reasons["bn"]
    assert_equivalent(net, result)


def test_unfoldable_scales_and_batch_statistics():
    text = (header() + conv("c1", "data", "c1") + scale("spatial", "c1", "c1", num_axes=2)
            + conv("c2", "c1", "c2") + conv("gain", "data", "gain")      # element-wise gain map
            + layer("by_blob", "Scale", ["c2", "gain"], ["c2s"], "scale_param { axis: 0 }")
            + conv("c3", "c2s", "c3") + batchnorm("live", "c3", "c3", use_global_stats=False))
    net = net_with_random_weights(text, seed=14)
    result = fold_batchnorm(net)
    reasons = {s.layer: s.reason for s in result.skipped}
    assert set(reasons) == {"spatial", "by_blob", "live"}
    assert "other than the channel axis" in reasons["spatial"]
    assert "second input blob" in reasons["by_blob"]
    assert "use_global_stats is false" in reasons["live"]
    assert [l.type for l in result.param.layer] == [l.type for l in net.param.layer]


def test_shared_weights_are_not_folded():
    text = (header() + conv("c1", "data", "c1").replace("convolution_param", 'param { name: "w" } convolution_param')
            + conv("c1b", "data", "c1b").replace("convolution_param", 'param { name: "w" } convolution_param')
            + batchnorm("bn", "c1", "c1") + layer("sum", "Eltwise", ["c1", "c1b"], ["sum"]))
    result = fold_batchnorm(net_with_random_weights(text, seed=15))
    assert "shares weights with 'c1b'" in result.skipped[0].reason


def test_rewiring_that_would_shadow_another_blob_is_refused():
    # 'p' writes blob 'out' between c1 and the BN that also writes 'out'; moving
    # 'out' up to c1 would let p's write hide c1's from the Eltwise. Caffe and
    # OpenCV reject a blob with two non-in-place producers ("produced by
    # multiple sources"), and so does caffessd's Net now (caffessd.validate);
    # folding still refuses such a rewiring should a net reach it unchecked.
    text = (header() + conv("c1", "data", "c1") + conv("p", "data", "out") + conv("q", "out", "q")
            + batchnorm("bn", "c1", "out") + layer("sum", "Eltwise", ["out", "q"], ["sum"]))
    with pytest.raises(FormatError, match="blob 'out' is already produced by an earlier layer"):
        net_with_random_weights(text, seed=16)


def test_non_positive_variance_is_reported_not_folded():
    text = header() + conv("c1", "data", "c1") + batchnorm("bn", "c1", "c1") + relu("r", "c1", "c1")
    net = net_with_random_weights(text, seed=17, scale_factor=1.0)
    net.weights["bn"][1][3] = -1.0   # a corrupt snapshot: variance + eps < 0 in channel 3
    result = fold_batchnorm(net)
    assert [s.layer for s in result.skipped] == ["bn"]
    assert "variance + eps is not positive" in result.skipped[0].reason
    assert "bn" in result.weights and not result.folded


# ---------------------------------------------------------------- TensorFlow-style padding

def tf_pad_block(margin_reader: str = "") -> str:
    """conv (pad 2, stride 2) -> Slice rows -> Slice columns -> BN -> Scale, the
    gen-model --tf-pad pattern; the cut-off margins go to a Silence layer."""
    return (header((1, 3, 13, 12)) + conv("c1", "data", "c1/pad", pad=2, stride=2, bias=False)
            + layer("slice", "Slice", ["c1/pad"], ["c1/margin1", "c1/tmp"], "slice_param { axis: 2 slice_point: 1 }")
            + layer("slice", "Slice", ["c1/tmp"], ["c1/margin2", "c1"], "slice_param { axis: 3 slice_point: 1 }")
            + batchnorm("c1/bn", "c1", "c1") + scale("c1/scale", "c1", "c1") + relu("c1/relu", "c1", "c1")
            + layer("silence", "Silence", ["c1/margin1", "c1/margin2"], [])
            + margin_reader)


@pytest.mark.parametrize("runner", RUNNERS)
def test_batchnorm_folds_through_tf_padding_slices(runner):
    net = net_with_random_weights(tf_pad_block(), seed=11)
    result = fold_batchnorm(net)
    assert types(result) == ["Convolution", "Slice", "Slice", "ReLU", "Silence"]
    assert not result.skipped and {f.into for f in result.folded} == {"c1"}
    assert layer_named(result, "c1").convolution_param.bias_term
    assert_equivalent(net, result, runner)


def test_batchnorm_after_a_used_margin_stays():
    net = net_with_random_weights(tf_pad_block(conv("c2", "c1/margin2", "c2", num_output=4)), seed=12)
    result = fold_batchnorm(net)
    assert "BatchNorm" in types(result)
    assert "whose other output 'c1/margin2' is used" in result.skipped[0].reason
    assert_equivalent(net, result)


def test_batchnorm_after_a_channel_slice_stays():
    text = (header() + conv("c1", "data", "c1", bias=False)
            + layer("cut", "Slice", ["c1"], ["a", "b"], "slice_param { axis: 1 slice_point: 4 }")
            + batchnorm("a/bn", "a", "a") + layer("silence", "Silence", ["b"], []))
    net = net_with_random_weights(text, seed=13)
    result = fold_batchnorm(net)
    assert types(result) == ["Convolution", "Slice", "BatchNorm", "Silence"]
    assert "slices channels" in result.skipped[0].reason
    assert_equivalent(net, result)
