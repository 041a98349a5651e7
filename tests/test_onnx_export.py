"""export-onnx CLI, unsupported layers, and the converter paths OpenCV 4.x
cannot check directly (InnerProduct transpose, PriorBox img_h/img_w,
CORNER_SIZE decoding, keep_top_k -1, Silence, train/test data layers)."""
import subprocess
import sys

import numpy as np
import onnx
import pytest

from caffessd.errors import UnsupportedLayerError
from caffessd.onnxconv import read_metadata, read_preprocessing, to_onnx
from caffessd.inference.session import run_onnx
from caffessd.priorbox import prior_boxes
from caffessd import caffe_pb2
from conftest import ROOT
from onnx_parity import assert_close, build_net, cv2, opencv_forward
from test_onnx_layers import SSD_NET, _input, _layer


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "caffessd", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_valid_model_with_metadata(face_prototxt, face_caffemodel, tmp_path):
    out = tmp_path / "face.onnx"
    result = _cli("export-onnx", face_prototxt, face_caffemodel, "-o", out, "--mean", "104,117,123",
                  "--scale", "1", "--swap-rb")
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["detection_out"]
    assert read_preprocessing(out) == {"mean": [104.0, 117.0, 123.0], "scale": 1.0,
                                       "input_size": [320, 240], "channel_order": "RGB"}


def test_cli_raw_export_runs_in_opencv(face_prototxt, face_caffemodel, tmp_path):
    out = tmp_path / "raw.onnx"
    result = _cli("export-onnx", face_prototxt, face_caffemodel, "-o", out, "--raw", "--opset", "18",
                  "--input-size", "160x120")
    assert result.returncode == 0, result.stderr
    assert read_metadata(out)["kind"] == "raw"
    net = cv2.dnn.readNetFromONNX(str(out))
    blob = np.random.default_rng(0).uniform(-100, 100, (1, 3, 120, 160)).astype(np.float32)
    net.setInput(blob)
    loc, conf, priors = net.forward(["loc", "conf", "priors"])
    ours = run_onnx(out, {"data": blob})
    assert priors.shape == (1, 2, loc.shape[1])
    for name, theirs in (("loc", loc), ("conf", conf), ("priors", priors)):
        assert_close(ours[name], theirs, name)


@pytest.mark.parametrize("args, message", [
    (["MISSING.prototxt", "W.caffemodel"], "no such file"),
    (["FACE", "FACE_W", "--mean", "1,x"], "--mean expects"),
    (["FACE", "FACE_W", "--opset", "9"], "opset 9 is not supported"),
    (["FACE", "FACE_PROTOTXT_AS_WEIGHTS"], "caffemodel"),
])
def test_cli_bad_input_one_line_no_file(face_prototxt, face_caffemodel, tmp_path, args, message):
    swap = {"FACE": face_prototxt, "FACE_W": face_caffemodel, "FACE_PROTOTXT_AS_WEIGHTS": face_prototxt}
    out = tmp_path / "never.onnx"
    result = _cli("export-onnx", *[swap.get(a, a) for a in args], "-o", out)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caffessd: error:") and message in lines[0], result.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_unsupported_layer_names_layer_and_type(tmp_path):
    text = _input("data", 1, 3, 8, 8) + _layer("lrn1", "LRN", "data") + _layer("r", "ReLU", "lrn1")
    _, _, net = build_net(tmp_path, "lrn", text)
    with pytest.raises(UnsupportedLayerError) as info:
        to_onnx(net)
    assert "lrn1" in str(info.value) and "LRN" in str(info.value)


def test_inner_product_transpose_equals_opencv_on_transposed_weights(tmp_path):
    """OpenCV 4.x ignores `transpose`, so compare with the equivalent plain layer."""
    body = _input("data", 2, 3, 4, 5)
    _, caffemodel_t, net_t = build_net(tmp_path, "fct", body + _layer(
        "fc", "InnerProduct", "data", params="inner_product_param { num_output: 7 transpose: true }"))
    plain = body + _layer("fc", "InnerProduct", "data", params="inner_product_param { num_output: 7 }")
    prototxt = tmp_path / "fc.prototxt"
    prototxt.write_text(plain)
    from caffessd import protoio
    model = protoio.read_caffemodel(caffemodel_t)
    for layer in model.layer:
        if layer.name == "fc":
            weight = protoio.blob_to_array(layer.blobs[0])
            protoio.array_to_blob(weight.T.copy(), layer.blobs[0])
    caffemodel = tmp_path / "fc.caffemodel"
    protoio.write_caffemodel(model, caffemodel)
    data = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype(np.float32)
    ours = run_onnx(to_onnx(net_t), {"data": data})["fc"]
    theirs = opencv_forward(prototxt, caffemodel, {"data": data}, ["fc"])["fc"]
    assert_close(ours, theirs, "fc")


def test_prior_box_explicit_image_size_and_steps():
    """img_h/img_w and step_h/step_w win over the data blob's size (Caffe-SSD)."""
    param = caffe_pb2.PriorBoxParameter(min_size=[10], max_size=[20], aspect_ratio=[2], flip=False,
                                        img_h=32, img_w=40, step_h=4, step_w=5, offset=0.3, variance=[0.1])
    priors = prior_boxes(param, (2, 3), (30, 50))
    assert priors.shape == (1, 2, 2 * 3 * 3 * 4)
    boxes = priors[0, 0].reshape(2, 3, 3, 4)
    cx, cy = (1 + 0.3) * 5, (1 + 0.3) * 4  # cell (h=1, w=1)
    side = np.sqrt(10 * 20)
    expected = [[cx - 5, cy - 5, cx + 5, cy + 5],
                [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2],
                [cx - 10 * np.sqrt(2) / 2, cy - 10 / np.sqrt(2) / 2, cx + 10 * np.sqrt(2) / 2, cy + 10 / np.sqrt(2) / 2]]
    expected = np.asarray(expected) / [40, 32, 40, 32]
    np.testing.assert_allclose(boxes[1, 1], expected, atol=1e-6)
    assert np.all(priors[0, 1] == np.float32(0.1))


# ---------------------------------------------------------------- DetectionOutput reference

def _reference_detections(loc, conf, priors, s):
    """Caffe-SSD DetectionOutput in numpy (one image), rows best first."""
    num_priors = priors.shape[-1] // 4
    boxes_p = priors[0, 0].reshape(-1, 4).astype(np.float64)
    var = priors[0, 1].reshape(-1, 4) if not s["encoded"] else np.ones((num_priors, 4))
    locations = 1 if s["share"] else s["classes"]
    loc = loc.reshape(num_priors, locations, 4).astype(np.float64)
    w, h = boxes_p[:, 2] - boxes_p[:, 0], boxes_p[:, 3] - boxes_p[:, 1]
    conf = conf.reshape(num_priors, s["classes"])
    rows = []
    for c in range(s["classes"]):
        if c == s["background"]:
            continue
        l = loc[:, 0 if s["share"] else c] * var
        if s["code"] == "CORNER_SIZE":
            boxes = boxes_p + l * np.stack([w, h, w, h], 1)
        elif s["code"] == "CORNER":
            boxes = boxes_p + l
        else:
            cx = l[:, 0] * w + (boxes_p[:, 0] + boxes_p[:, 2]) / 2
            cy = l[:, 1] * h + (boxes_p[:, 1] + boxes_p[:, 3]) / 2
            bw, bh = np.exp(l[:, 2]) * w, np.exp(l[:, 3]) * h
            boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        scores = conf[:, c]
        order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > s["threshold"]][: s["top_k"]]
        kept = []
        for i in order:
            if all(_iou(boxes[i], boxes[j]) <= s["nms"] for j in kept):
                kept.append(i)
        rows += [[0, c, scores[i], *boxes[i]] for i in kept]
    rows.sort(key=lambda r: -r[2])
    return np.asarray(rows[: s["keep"]] if s["keep"] >= 0 else rows, dtype=np.float64).reshape(-1, 7)


def _iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


VARIANTS = {
    # name: (bottom loc blob, settings)
    "det": ("loc", dict(code="CENTER_SIZE", encoded=False, share=True, background=0, nms=0.45, top_k=20,
                        keep=15, threshold=0.2)),
    "det_cs": ("loc", dict(code="CORNER_SIZE", encoded=False, share=True, background=2, nms=0.5, top_k=10,
                           keep=12, threshold=0.25)),
    "det_all": ("loc_nc", dict(code="CENTER_SIZE", encoded=True, share=False, background=-1, nms=0.4, top_k=25,
                               keep=-1, threshold=0.3)),
}


def _variant_layer(name, loc, s):
    return _layer(name, "DetectionOutput", [loc, "conf_flat", "priors"], params=(
        f"detection_output_param {{ num_classes: 3 share_location: {str(s['share']).lower()} "
        f"background_label_id: {s['background']} nms_param {{ nms_threshold: {s['nms']} top_k: {s['top_k']} }} "
        f"code_type: {s['code']} variance_encoded_in_target: {str(s['encoded']).lower()} "
        f"keep_top_k: {s['keep']} confidence_threshold: {s['threshold']} }}"))


def test_detection_output_variants_match_numpy_reference(tmp_path):
    """The numpy reference agrees with OpenCV on 'det' (checked in test_onnx_layers);
    here it also covers CORNER_SIZE, no background class and keep_top_k -1."""
    base = SSD_NET.split('layer { name: "det"')[0]
    text = base + "".join(_variant_layer(n, loc, s) for n, (loc, s) in VARIANTS.items())
    _, _, net = build_net(tmp_path, "ssd_variants", text, seed=5, loc_scale=0.02)
    data = np.random.default_rng(9).normal(0, 1, net.input_shapes()["data"]).astype(np.float32)
    ours = run_onnx(to_onnx(net, extra_outputs=["loc", "loc_nc", "conf_flat", "priors"]), {"data": data})
    for name, (loc, settings) in VARIANTS.items():
        settings = dict(settings, classes=3)
        expected = _reference_detections(ours[loc], ours["conf_flat"], ours["priors"], settings)
        got = ours[name].reshape(-1, 7)
        assert len(expected) > 0, name
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)


def test_silence_and_train_data_layers(tmp_path):
    text = ('layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST } '
            'transform_param { crop_size: 8 } data_param { batch_size: 1 } }\n'
            + _layer("conv", "Convolution", "data", params="convolution_param { num_output: 2 kernel_size: 3 }")
            + _layer("loss", "SoftmaxWithLoss", ["conv", "label"])
            + _layer("quiet", "Silence", "label", []))
    _, _, net = build_net(tmp_path, "train", text)
    model = to_onnx(net)
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["conv"]
    out = run_onnx(model, {"data": np.ones((1, 3, 8, 8), np.float32)})["conv"]
    assert out.shape == (1, 2, 6, 6)


def test_extra_outputs_when_layer_and_blob_names_cross(tmp_path):
    """Layer 'x' writes blob 'y' and layer 'y' writes blob 'x' (MobileNetV2-SSDLite
    has such names): extra outputs name layers, as OpenCV's forward(name) does
    (a net output's own name keeps meaning that output)."""
    text = (_input("data", 1, 2, 3, 3)
            + _layer("x", "Power", "data", "y", "power_param { scale: 2 }")
            + _layer("y", "Power", "y", "x", "power_param { shift: 1 }")
            + _layer("z", "Sigmoid", "x"))
    prototxt, caffemodel, net = build_net(tmp_path, "cross", text)
    data = np.random.default_rng(2).normal(size=(1, 2, 3, 3)).astype(np.float32)
    ours = run_onnx(to_onnx(net, extra_outputs=["x", "y"]), {"data": data})
    np.testing.assert_allclose(ours["x"], 2 * data, rtol=1e-6)
    np.testing.assert_allclose(ours["y"], 2 * data + 1, rtol=1e-6)
    theirs = opencv_forward(prototxt, caffemodel, {"data": data}, ["x", "y"])
    for name in ("x", "y"):
        assert_close(ours[name], theirs[name], name)
