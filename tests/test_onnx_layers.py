"""Per-layer parity: small nets with random weights, every blob through
caffessd's ONNX converter + onnxruntime versus OpenCV 4.x's Caffe importer
(fusion off). Tolerance: 1e-4 relative to each blob's largest magnitude;
DetectionOutput rows 1e-4 absolute, same rows in the same order.

Together the nets use every layer type the converter supports, with odd
spatial sizes, ceil-mode pooling, padded AVE pooling, dilation, separate h/w
kernel/pad/stride, depthwise convolution and (depthwise) deconvolution.
"""
import numpy as np
import pytest

from caffessd.onnxconv import EMITTERS, to_onnx
from caffessd.inference.session import run_onnx
from onnx_parity import assert_close, assert_same_detections, build_net, opencv_forward


def _input(name, *dims):
    return f'input: "{name}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in dims)} }}\n'


def _layer(name, kind, bottoms, tops=None, params=""):
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [name] if tops is None else ([tops] if isinstance(tops, str) else tops)
    text = f'layer {{ name: "{name}" type: "{kind}"'
    text += "".join(f' bottom: "{b}"' for b in bottoms) + "".join(f' top: "{t}"' for t in tops)
    return text + f" {params} }}\n"


CONV_NET = _input("data", 1, 4, 11, 13) + "".join([
    _layer("conv_hw", "Convolution", "data", params="convolution_param { num_output: 6 kernel_h: 3 kernel_w: 5 "
           "pad_h: 1 pad_w: 2 stride_h: 2 stride_w: 1 }"),
    _layer("bn", "BatchNorm", "conv_hw", "conv_hw", "batch_norm_param { eps: 0.001 }"),
    _layer("scale", "Scale", "conv_hw", "conv_hw", "scale_param { bias_term: true }"),
    _layer("leaky", "ReLU", "conv_hw", "conv_hw", "relu_param { negative_slope: 0.1 }"),
    _layer("dw_dil", "Convolution", "conv_hw", params="convolution_param { num_output: 6 group: 6 kernel_size: 3 "
           "pad: 2 dilation: 2 bias_term: false }"),
    _layer("bn_f0", "BatchNorm", "dw_dil"),
    _layer("relu6", "ReLU6", "bn_f0"),
    _layer("grouped", "Convolution", "relu6", params="convolution_param { num_output: 4 group: 2 kernel_size: 1 }"),
    _layer("prelu", "PReLU", "grouped"),
    _layer("prelu_shared", "PReLU", "prelu", params="prelu_param { channel_shared: true }"),
    _layer("deconv", "Deconvolution", "prelu_shared", params="convolution_param { num_output: 3 kernel_size: 4 "
           "stride: 2 pad: 1 }"),
    _layer("deconv_dw", "Deconvolution", "deconv", params="convolution_param { num_output: 3 group: 3 kernel_h: 3 "
           "kernel_w: 2 stride_h: 2 stride_w: 1 bias_term: false }"),
    _layer("sigmoid", "Sigmoid", "deconv_dw"),
    _layer("tanh", "TanH", "deconv"),
    _layer("relu", "ReLU", "tanh"),
    _layer("power", "Power", "sigmoid", params="power_param { power: 2 scale: 0.5 shift: 1 }"),
    _layer("scale_plain", "Scale", "power"),
])

POOL_NET = _input("data", 1, 3, 13, 11) + "".join([
    _layer("max_ceil", "Pooling", "data", params="pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
    _layer("max_pad", "Pooling", "data", params="pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }"),
    _layer("ave_pad", "Pooling", "data", params="pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
    _layer("ave_ceil", "Pooling", "data", params="pooling_param { pool: AVE kernel_size: 2 stride: 2 }"),
    _layer("ave_hw", "Pooling", "data", params="pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 "
           "stride_w: 3 pad_h: 1 pad_w: 1 }"),
    _layer("max_hw", "Pooling", "data", params="pooling_param { pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 3 "
           "stride_w: 2 pad_h: 1 pad_w: 0 }"),
    _layer("global_max", "Pooling", "max_ceil", params="pooling_param { pool: MAX global_pooling: true }"),
    _layer("global_ave", "Pooling", "ave_pad", params="pooling_param { pool: AVE global_pooling: true }"),
])

TENSOR_NET = _input("data", 1, 4, 6, 8) + "".join([
    _layer("a", "Convolution", "data", params="convolution_param { num_output: 4 kernel_size: 1 }"),
    _layer("b", "Convolution", "data", params="convolution_param { num_output: 4 kernel_size: 3 pad: 1 }"),
    _layer("sum", "Eltwise", ["a", "b"], params="eltwise_param { operation: SUM coeff: 0.5 coeff: -2 }"),
    _layer("prod", "Eltwise", ["a", "b"], params="eltwise_param { operation: PROD }"),
    _layer("max", "Eltwise", ["a", "b", "sum"], params="eltwise_param { operation: MAX }"),
    _layer("concat", "Concat", ["prod", "max"], params="concat_param { axis: 1 }"),
    _layer("slice", "Slice", "concat", ["s1", "s2", "s3"], "slice_param { axis: 1 slice_point: 3 slice_point: 5 }"),
    _layer("split", "Split", "s3", ["sp1", "sp2"]),
    _layer("pw1", "Power", "sp1", params="power_param { scale: 2 }"),
    _layer("pw2", "Power", "sp2", params="power_param { shift: -1 }"),
    _layer("r1", "ReLU", "s1"),
    _layer("g2", "Sigmoid", "s2"),
    _layer("pool", "Pooling", "a", params="pooling_param { pool: AVE global_pooling: true }"),
    _layer("gate", "InnerProduct", "pool", params="inner_product_param { num_output: 4 }"),
    _layer("gated", "Scale", ["b", "gate"], params="scale_param { axis: 0 }"),
    _layer("crop", "Crop", ["b", "r1"], params="crop_param { axis: 2 offset: 0 }"),
    _layer("crop2", "Crop", ["gated", "pw1"], params="crop_param { axis: 1 offset: 0 offset: 0 offset: 0 }"),
    _layer("flatten", "Flatten", "crop"),
    _layer("fc", "InnerProduct", "flatten", params="inner_product_param { num_output: 5 }"),
    _layer("fc_t", "InnerProduct", "crop2", params="inner_product_param { num_output: 3 axis: 2 }"),
    _layer("drop", "Dropout", "fc_t", params="dropout_param { dropout_ratio: 0.3 }"),
    _layer("soft_fc", "Softmax", "fc"),
    _layer("reshape", "Reshape", "b", params="reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 8 } }"),
    _layer("permute", "Permute", "reshape", params="permute_param { order: 0 order: 2 order: 3 order: 1 }"),
    _layer("soft_last", "Softmax", "permute", params="softmax_param { axis: 3 }"),
    _layer("soft_ch", "Softmax", "b"),
    _layer("bn_batch", "BatchNorm", "a", params="batch_norm_param { use_global_stats: false }"),
])

SSD_NET = _input("data", 1, 3, 30, 40) + "".join([
    _layer("f1", "Convolution", "data", params="convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 }"),
    _layer("f2", "Convolution", "f1", params="convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 }"),
    _layer("n1", "Normalize", "f1", params="norm_param { across_spatial: false channel_shared: false }"),
    _layer("n2", "Normalize", "f2", params="norm_param { across_spatial: true channel_shared: true eps: 1e-6 }"),
    # n1: 3 priors per cell (min, sqrt(min*max), ratio 2 and 1/2 with flip) = 4
    _layer("n1_loc", "Convolution", "n1", params="convolution_param { num_output: 16 kernel_size: 3 pad: 1 }"),
    _layer("n1_conf", "Convolution", "n1", params="convolution_param { num_output: 12 kernel_size: 3 pad: 1 }"),
    _layer("n1_loc_nc", "Convolution", "n1", params="convolution_param { num_output: 48 kernel_size: 1 }"),
    _layer("n1_prior", "PriorBox", ["n1", "data"], params="prior_box_param { min_size: 6 max_size: 12 "
           "aspect_ratio: 2 flip: true clip: true step: 2.5 variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }"),
    # n2: per min size (2): min, sqrt(min*max), ratios 2, 3 (no flip) = 8
    _layer("n2_loc", "Convolution", "n2", params="convolution_param { num_output: 32 kernel_size: 3 pad: 1 }"),
    _layer("n2_conf", "Convolution", "n2", params="convolution_param { num_output: 24 kernel_size: 3 pad: 1 }"),
    _layer("n2_loc_nc", "Convolution", "n2", params="convolution_param { num_output: 96 kernel_size: 1 }"),
    _layer("n2_prior", "PriorBox", ["n2", "data"], params="prior_box_param { min_size: 10 min_size: 16 "
           "max_size: 20 max_size: 28 aspect_ratio: 2 aspect_ratio: 3 flip: false clip: false img_h: 30 img_w: 40 "
           "step_h: 4 step_w: 5 offset: 0.3 variance: 0.1 }"),
] + [
    layer
    for branch in ("n1_loc", "n1_conf", "n1_loc_nc", "n2_loc", "n2_conf", "n2_loc_nc")
    for layer in (_layer(f"{branch}_perm", "Permute", branch, params="permute_param { order: 0 order: 2 order: 3 order: 1 }"),
                  _layer(f"{branch}_flat", "Flatten", f"{branch}_perm", params="flatten_param { axis: 1 }"))
] + [
    _layer("loc", "Concat", ["n1_loc_flat", "n2_loc_flat"], params="concat_param { axis: 1 }"),
    _layer("loc_nc", "Concat", ["n1_loc_nc_flat", "n2_loc_nc_flat"], params="concat_param { axis: 1 }"),
    _layer("conf", "Concat", ["n1_conf_flat", "n2_conf_flat"], params="concat_param { axis: 1 }"),
    _layer("priors", "Concat", ["n1_prior", "n2_prior"], params="concat_param { axis: 2 }"),
    _layer("conf_reshape", "Reshape", "conf", params="reshape_param { shape { dim: 0 dim: -1 dim: 3 } }"),
    _layer("conf_softmax", "Softmax", "conf_reshape", params="softmax_param { axis: 2 }"),
    _layer("conf_flat", "Flatten", "conf_softmax", params="flatten_param { axis: 1 }"),
    _layer("det", "DetectionOutput", ["loc", "conf_flat", "priors"], params="detection_output_param { num_classes: 3 "
           "share_location: true background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 20 } "
           "code_type: CENTER_SIZE keep_top_k: 15 confidence_threshold: 0.2 }"),
    # OpenCV wants variance-free priors (one plane) when variances are encoded in the target.
    _layer("prior_planes", "Slice", "priors", ["prior_boxes", "prior_vars"], "slice_param { axis: 1 }"),
    _layer("silence", "Silence", "prior_vars", []),
    _layer("det_corner", "DetectionOutput", ["loc", "conf_flat", "prior_boxes"], params="detection_output_param { "
           "num_classes: 3 share_location: true background_label_id: 0 nms_param { nms_threshold: 0.3 top_k: 30 } code_type: CORNER "
           "variance_encoded_in_target: true keep_top_k: 40 confidence_threshold: 0.3 }"),
    _layer("det_unshared", "DetectionOutput", ["loc_nc", "conf_flat", "priors"], params="detection_output_param { "
           "num_classes: 3 share_location: false background_label_id: 0 nms_param { nms_threshold: 0.4 top_k: 25 } "
           "code_type: CENTER_SIZE keep_top_k: 20 confidence_threshold: 0.3 }"),
])

NETS = {"conv": CONV_NET, "pool": POOL_NET, "tensor": TENSOR_NET, "ssd": SSD_NET}


def _layer_names(net, *, detection: bool):
    return [layer.name for layer in net.layers
            if (layer.type == "DetectionOutput") == detection and layer.type != "Silence"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nets")
    return {name: build_net(folder, name, text, seed=i, loc_scale=0.02) for i, (name, text) in enumerate(NETS.items())}


@pytest.mark.parametrize("name", list(NETS))
def test_every_blob_matches_opencv(built, name):
    prototxt, caffemodel, net = built[name]
    names = _layer_names(net, detection=False)
    shape = net.input_shapes()["data"]
    data = np.random.default_rng(7).normal(0, 1, shape).astype(np.float32)
    ours = run_onnx(to_onnx(net, extra_outputs=names), {"data": data})
    theirs = opencv_forward(prototxt, caffemodel, {"data": data}, names)
    for layer in names:
        assert_close(ours[layer], theirs[layer], f"{name}/{layer}")


def test_detection_variants_match_opencv(built):
    prototxt, caffemodel, net = built["ssd"]
    names = _layer_names(net, detection=True)
    data = np.random.default_rng(3).normal(0, 1, net.input_shapes()["data"]).astype(np.float32)
    ours = run_onnx(to_onnx(net), {"data": data})
    theirs = opencv_forward(prototxt, caffemodel, {"data": data}, names)
    for layer in names:
        rows = ours[layer].reshape(-1, 7)
        assert rows[:, 2].any(), f"{layer}: test input should produce detections"
        assert_same_detections(rows, theirs[layer])


def test_nets_cover_every_supported_layer():
    used = {line.split('type: "')[1].split('"')[0] for text in NETS.values() for line in text.splitlines()
            if 'type: "' in line}
    assert set(EMITTERS) - used <= {"Silence"}, set(EMITTERS) - used
