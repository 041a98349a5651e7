"""gen-model's TF-compatibility options: --extra-layers, --min-depth, --finegrain, and
inputs small enough that stride-2 extra layers run on 1x1 maps.

Structure is checked on the generated nets; numerics by running each deploy net
(random --init-weights) in OpenCV 4.x and in caffessd's ONNX path, which must
agree within 1e-4 (check_onnx_matches_opencv, as in test_gen_model_onnx). The
configurations avoid depthwise convs on 1-pixel maps in the backbone, where
OpenCV 4.x is wrong (see test_gen_model_onnx); SSDLite heads on such maps are
left out of the comparison there.
"""
import math

import pytest

from caffessd.generators import SSDConfig, build_net, plan_net
from test_gen_model_cli import run_cli
from test_gen_model_onnx import check_onnx_matches_opencv


def layers_by_name(net):
    return {layer.name: layer for layer in net.layer}


def tf_same_sizes(size, strides):
    """Map sizes after each stride of TF SAME padding: ceil(size / stride), independent of Caffe."""
    sizes = []
    for stride in strides:
        size = math.ceil(size / stride)
        sizes.append(size)
    return sizes


# ---------------------------------------------------------------- --extra-layers

def test_plain_extra_layers_are_one_3x3_stride_2_conv_named_as_tf_maps_them():
    config = SSDConfig(backbone="mnv2", head="ssd", extra_layers="plain", tf_pad=True, input_width=300,
                       input_height=300)
    layers = layers_by_name(build_net(config, "deploy"))
    for n in range(2, 6):
        assert f"layer_19_2_{n}/depthwise" not in layers
        conv = layers[f"layer_19_2_{n}"].convolution_param
        assert (list(conv.kernel_size), list(conv.stride), conv.group) == ([3], [2], 1)
        assert layers[f"layer_19_2_{n}"].bottom[0] == f"layer_19_1_{n}"
    # 300 -> 10x10 Conv_1: the first extra layer pads 2 and slices (TF SAME on an even map).
    assert layers["layer_19_2_2"].top[0] == "layer_19_2_2/pad"
    assert [s for s in layers["silence"].bottom if s.startswith("layer_19_2_2/")] == [
        "layer_19_2_2/margin1", "layer_19_2_2/margin2"]
    assert plan_net(config).feature_sizes == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def test_extra_layer_defaults_are_the_published_styles():
    mnv2 = layers_by_name(build_net(SSDConfig(backbone="mnv2"), "deploy"))
    assert "layer_19_2_2/depthwise" in mnv2
    mnv1 = layers_by_name(build_net(SSDConfig(backbone="mnv1", head="ssd"), "deploy"))
    assert "conv14_2/dw" not in mnv1 and mnv1["conv14_2"].convolution_param.kernel_size[:] == [3]
    lite = layers_by_name(build_net(SSDConfig(backbone="mnv1", head="ssdlite"), "deploy"))
    assert "conv14_2/dw" in lite
    # ... and each backbone takes the other style on request.
    plain_lite = layers_by_name(build_net(SSDConfig(backbone="mnv1", head="ssdlite", extra_layers="plain"), "deploy"))
    assert "conv14_2/dw" not in plain_lite
    dw_ssd = layers_by_name(build_net(SSDConfig(backbone="mnv1", head="ssd", extra_layers="depthwise"), "deploy"))
    assert dw_ssd["conv14_2/dw"].convolution_param.group == 256


# ---------------------------------------------------------------- --min-depth, --finegrain

def channels(config, name):
    return layers_by_name(build_net(config, "deploy"))[name].convolution_param.num_output


def test_min_depth_sets_the_smallest_backbone_conv():
    # MobileNetV2 width 0.35: the first block's 16 * 0.35 rounds to 8, or min_depth.
    assert channels(SSDConfig(backbone="mnv2", width=0.35), "conv/project") == 8
    assert channels(SSDConfig(backbone="mnv2", width=0.35, min_depth=16), "conv/project") == 16
    # Expansions are not raised to min_depth (TF-slim's expand_input_by_factor): 16 * 6.
    assert channels(SSDConfig(backbone="mnv2", width=0.35, min_depth=16), "conv_1/expand") == 96
    # MobileNet v1 width 0.25: conv0 has int(32 * 0.25) = 8 channels, or min_depth.
    assert channels(SSDConfig(backbone="mnv1", width=0.25), "conv0") == 8
    assert channels(SSDConfig(backbone="mnv1", width=0.25, min_depth=16), "conv0") == 16
    # Extra layers never go below 16, and follow a larger min_depth.
    assert channels(SSDConfig(backbone="mnv1", width=0.25), "conv17_1") == 16
    assert channels(SSDConfig(backbone="mnv1", width=0.25, min_depth=32), "conv17_1") == 32


def test_finegrain_keeps_conv_1_at_1280_below_width_1():
    assert channels(SSDConfig(backbone="mnv2", width=0.5), "Conv_1") == 640
    assert channels(SSDConfig(backbone="mnv2", width=0.5, finegrain=True), "Conv_1") == 1280
    assert channels(SSDConfig(backbone="mnv2", width=1.4, finegrain=True), "Conv_1") == 1792


# ---------------------------------------------------------------- small inputs

@pytest.mark.parametrize("backbone, size", [("mnv1", 224), ("mnv2", 256), ("mnv2", 224), ("mnv1", 64)])
def test_small_inputs_give_tf_same_map_sizes(backbone, size):
    # Heads sit at strides 16 and 32, then four stride-2 extra layers; a 1x1 map stays 1x1.
    config = SSDConfig(backbone=backbone, input_width=size, input_height=size, tf_pad=True)
    sizes = tf_same_sizes(size, [2, 2, 2, 2, 2, 2, 2, 2, 2])[3:]
    assert plan_net(config).feature_sizes == [(s, s) for s in sizes]
    assert plan_net(config).feature_sizes[-1] == (1, 1)


def test_cli_writes_a_64_pixel_net_with_the_new_options(tmp_path, capsys):
    code, _, err = run_cli(["--backbone", "mnv2", "--input", "64", "--extra-layers", "plain", "--min-depth", "16",
                            "--width", "0.35", "--stage", "deploy", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    text = (tmp_path / "deploy.prototxt").read_text()
    assert 'name: "layer_19_2_5"' in text and "layer_19_2_5/depthwise" not in text


# ---------------------------------------------------------------- OpenCV vs ONNX

RUN = {
    "mnv2-ssd-plain-w0.35-min16-224": dict(backbone="mnv2", head="ssd", extra_layers="plain", min_depth=16,
                                           width=0.35, input_width=224, input_height=224, relu6=True, tf_pad=True),
    "mnv2-ssdlite-plain-w0.5-min16-256": dict(backbone="mnv2", head="ssdlite", extra_layers="plain", min_depth=16,
                                              width=0.5, input_width=256, input_height=256, relu6=True, tf_pad=True),
    "mnv1-ssd-w0.25-min16-224": dict(backbone="mnv1", head="ssd", min_depth=16, width=0.25, input_width=224,
                                     input_height=224, tf_pad=True),
    "mnv1-ssdlite-plain-160x128": dict(backbone="mnv1", head="ssdlite", extra_layers="plain", input_width=160,
                                       input_height=128),
    "mnv2-finegrain-w0.5-300": dict(backbone="mnv2", head="ssd", width=0.5, finegrain=True, tf_pad=True),
}


@pytest.mark.parametrize("name", sorted(RUN))
def test_option_nets_run_alike_in_opencv_and_onnx(name, tmp_path):
    check_onnx_matches_opencv(SSDConfig(num_classes=3, **RUN[name]), tmp_path)
