"""--init-weights: a caffemodel filled as Caffe's fillers fill a net before training.

Filler statistics are checked against Caffe's definitions (filler.hpp) on
blobs large enough for tight bounds; the caffemodel is checked to load by
layer name in OpenCV (which must then use exactly our values) and in
caffessd's Net for every stage of the configuration.
"""
import math

import cv2
import numpy as np
import pytest

from caffessd import caffe_pb2
from caffessd.errors import CaffessdError
from caffessd.generators import SSDConfig, build_net, init_weights
from caffessd.generators.init_weights import fill
from caffessd.net import Net, filter_phase
from caffessd.protoio import blob_to_array, write_caffemodel, write_prototxt

CONFIG = SSDConfig(backbone="mnv1", head="ssdlite", input_width=160, input_height=128, num_classes=4, width=0.5,
                   feature_layers=["conv11", "conv13", "conv14_2", "conv15_2"])


@pytest.fixture(scope="module")
def deploy():
    return build_net(CONFIG, "deploy")


@pytest.fixture(scope="module")
def model(deploy):
    return init_weights(deploy, seed=7)


def blobs(model):
    return {layer.name: [blob_to_array(b) for b in layer.blobs] for layer in model.layer if layer.blobs}


def filler(**fields):
    message = caffe_pb2.FillerParameter()
    for key, value in fields.items():
        setattr(message, key, value)
    return message


RNG = np.random.default_rng(0)
SHAPE = (256, 64, 3, 3)  # fan_in 576, fan_out 2304


@pytest.mark.parametrize("norm, n", [(caffe_pb2.FillerParameter.FAN_IN, 576),
                                     (caffe_pb2.FillerParameter.FAN_OUT, 2304),
                                     (caffe_pb2.FillerParameter.AVERAGE, 1440)])
def test_msra_and_xavier_follow_caffe(norm, n):
    msra = fill(filler(type="msra", variance_norm=norm), SHAPE, RNG)
    assert msra.dtype == np.float32 and msra.shape == SHAPE
    assert abs(msra.mean()) < 0.01 * math.sqrt(2 / n)
    assert msra.std() == pytest.approx(math.sqrt(2 / n), rel=0.02)
    xavier = fill(filler(type="xavier", variance_norm=norm), SHAPE, RNG)
    bound = math.sqrt(3 / n)
    assert np.abs(xavier).max() <= bound and np.abs(xavier).max() > 0.99 * bound
    assert xavier.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # uniform(-a, a) has std a/sqrt(3)


def test_gaussian_uniform_constant():
    gaussian = fill(filler(type="gaussian", mean=0.5, std=0.01), SHAPE, RNG)
    assert gaussian.mean() == pytest.approx(0.5, abs=1e-3) and gaussian.std() == pytest.approx(0.01, rel=0.02)
    sparse = fill(filler(type="gaussian", std=1.0, sparse=64), SHAPE, RNG)  # keep 64 / 256 = 1/4
    assert np.count_nonzero(sparse) / sparse.size == pytest.approx(0.25, abs=0.01)
    uniform = fill(filler(type="uniform", min=-2.0, max=3.0), SHAPE, RNG)
    assert uniform.min() >= -2 and uniform.max() <= 3 and uniform.mean() == pytest.approx(0.5, abs=0.02)
    np.testing.assert_array_equal(fill(filler(type="constant", value=0.25), (5,), RNG), np.full(5, 0.25, np.float32))
    np.testing.assert_array_equal(fill(caffe_pb2.FillerParameter(), (3,), RNG), np.zeros(3, np.float32))
    with pytest.raises(CaffessdError, match="filler type 'bilinear' is not supported"):
        fill(filler(type="bilinear"), (1, 1, 4, 4), RNG)


def test_generated_layers_get_their_fillers(model):
    weights = blobs(model)
    kernel = weights["conv13"][0]  # 1x1 pointwise conv, msra on fan_in = channels
    assert kernel.std() == pytest.approx(math.sqrt(2 / kernel.shape[1]), rel=0.05)
    dw = weights["conv13/dw"][0]
    assert dw.shape[1:] == (1, 3, 3)
    assert dw.std() == pytest.approx(math.sqrt(2 / 9), rel=0.05)
    assert len(weights["conv13"]) == 1  # bias_term false under BatchNorm
    loc_kernel, loc_bias = weights["conv11_mbox_loc"]
    assert not loc_bias.any()
    mean, var, factor = weights["conv13/bn"]
    assert not mean.any() and (var == 1).all() and factor.tolist() == [1.0]
    gamma, beta = weights["conv13/scale"]
    assert (gamma == 1).all() and not beta.any()


def test_caffe_zero_bn_statistics_on_request(deploy):
    mean, var, factor = blobs(init_weights(deploy, bn_stats="zero"))["conv0/bn"]
    assert not mean.any() and not var.any() and factor.tolist() == [0.0]


def test_same_seed_same_weights(deploy, model):
    again = blobs(init_weights(deploy, seed=7))
    other = blobs(init_weights(deploy, seed=8))
    np.testing.assert_array_equal(again["conv5"][0], blobs(model)["conv5"][0])
    assert not np.array_equal(other["conv5"][0], again["conv5"][0])


def test_opencv_loads_the_caffemodel_by_name(deploy, model, tmp_path):
    write_prototxt(deploy, tmp_path / "deploy.prototxt")
    write_caffemodel(model, tmp_path / "init.caffemodel")
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "deploy.prototxt"), str(tmp_path / "init.caffemodel"))
    weights = blobs(model)
    for name in ("conv0", "conv7/dw", "conv15_2/dw", "conv13_mbox_conf/depthwise"):
        np.testing.assert_array_equal(net.getParam(name, 0), weights[name][0], err_msg=name)
    np.testing.assert_array_equal(net.getParam("conv11_mbox_conf", 0), weights["conv11_mbox_conf"][0])


@pytest.mark.parametrize("stage, phase", [("train", "TRAIN"), ("test", "TEST")])
def test_one_caffemodel_serves_every_stage(model, stage, phase):
    net = Net(filter_phase(build_net(CONFIG, stage), phase))
    net.attach_weights(model, "init.caffemodel", strict=True)
    assert set(net.weights) == {layer.name for layer in model.layer if layer.blobs}
