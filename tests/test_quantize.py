"""`caffessd quantize` on the bundled face detector: int8 QDQ with onnxruntime's
quantization tools, calibrated on the two bundled photos.

Acceptance (issue 14): the int8 model finds the same faces as the fp32 one
(IoU >= 0.9, score within 0.05), passes onnx.checker, runs in onnxruntime and
keeps the metadata; DetectionOutput and the priors stay float."""
import json
import shutil

import lmdb
import numpy as np
import onnx
import pytest

from caffessd import caffe_pb2
from caffessd.onnxconv import read_metadata
from caffessd.resources import bundled

FACE = bundled("yufacedetectnet", "yufacedetectnet-open-v2.prototxt").parent
PHOTOS = [FACE / "keliamoniz1.jpg", FACE / "keliamoniz2.jpg"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, run_cli):
    """fp32 export, int8 model and the quantize command's result."""
    work = tmp_path_factory.mktemp("quant")
    labelmap = work / "labelmap.prototxt"
    labelmap.write_text('item { name: "background" label: 0 }\nitem { name: "face" label: 1 }\n')
    calib = work / "calib"
    calib.mkdir()
    for photo in PHOTOS:
        shutil.copy(photo, calib / photo.name)
    fp32, int8 = work / "face.onnx", work / "face-int8.onnx"
    done = run_cli("export-onnx", FACE / "yufacedetectnet-open-v2.prototxt",
                   FACE / "yufacedetectnet-open-v2.caffemodel", "-o", fp32, "--mean", "0", "--scale", "1",
                   "--bgr", "--labels", labelmap)
    assert done.returncode == 0, done.stderr
    result = run_cli("quantize", fp32, "--calibrate", calib, "--images", "2", "-o", int8)
    assert result.returncode == 0, result.stderr
    return {"fp32": fp32, "int8": int8, "result": result, "work": work, "calib": calib}


def _faces(run_cli, model, out):
    result = run_cli("detect", *PHOTOS, "--onnx", model, "--out", out, "--threshold", "0.5",
                     "--cache-dir", out.parent / "cache")
    assert result.returncode == 0, result.stderr
    return json.loads((out / "detections.json").read_text())


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_int8_finds_the_same_faces(models, run_cli):
    fp32 = _faces(run_cli, models["fp32"], models["work"] / "det32")
    int8 = _faces(run_cli, models["int8"], models["work"] / "det8")
    for ours, theirs in zip(int8, fp32):
        assert ours["file"] == theirs["file"]
        assert len(theirs["detections"]) >= 1
        assert len(ours["detections"]) == len(theirs["detections"])
        for found in theirs["detections"]:
            best = max(ours["detections"], key=lambda d: _iou(d["box"], found["box"]))
            assert _iou(best["box"], found["box"]) >= 0.9
            assert abs(best["score"] - found["score"]) <= 0.05
            assert best["name"] == found["name"] == "face"


def test_int8_model_is_checked_quantized_and_keeps_metadata(models):
    model = onnx.load(str(models["int8"]))
    onnx.checker.check_model(model, full_check=True)
    before = read_metadata(models["fp32"])
    after = read_metadata(model)
    assert {k: v for k, v in after.items() if k != "quantization"} == before
    assert after["quantization"]["method"] == "minmax" and after["quantization"]["images"] == 2
    assert after["labels"] == {"0": "background", "1": "face"}
    producers = {out: node for node in model.graph.node for out in node.output}
    inits = {init.name: init for init in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:  # every conv reads int8 weights with one scale per output channel
        weight_dq = producers[conv.input[1]]
        assert weight_dq.op_type == "DequantizeLinear"
        assert inits[weight_dq.input[0]].data_type == onnx.TensorProto.INT8
        assert len(onnx.numpy_helper.to_array(inits[weight_dq.input[1]])) == conv_out_channels(conv, producers, inits)
    # The detection part stays float: no quantize/dequantize node after the last head conv.
    tail = [n for n in model.graph.node if n.name.startswith("detection_out")]
    assert tail and any(n.op_type == "NonMaxSuppression" for n in tail)
    assert not any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                   for n in tail for i in n.input)


def conv_out_channels(conv, producers, inits):
    return onnx.numpy_helper.to_array(inits[producers[conv.input[1]].input[0]]).shape[0]


def test_report_names_each_raw_output(models):
    out = models["result"].stdout
    assert "int8 QDQ (minmax calibration on 2 image(s))" in out
    for name in ("mbox_loc", "mbox_conf_flatten"):
        line = next(line for line in out.splitlines() if line.strip().startswith(name))
        assert "max |int8 - fp32|" in line
    # Scores after softmax: mean difference small, as the same-faces test needs.
    conf = next(line for line in out.splitlines() if line.strip().startswith("mbox_conf_flatten"))
    assert float(conf.rsplit("mean", 1)[1]) < 0.02


def _write_lmdb(path, photos):
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for index, photo in enumerate(photos):
            datum = caffe_pb2.AnnotatedDatum()
            datum.datum.encoded = True
            datum.datum.channels = 3
            datum.datum.data = photo.read_bytes()
            txn.put(f"{index:08d}_{photo.stem}".encode(), datum.SerializeToString())
    env.close()


def test_lmdb_calibration_equals_folder_calibration(models, tmp_path):
    """The same photos from an AnnotatedDatum LMDB give the same activation ranges."""
    from caffessd.inference import quantize_model

    _write_lmdb(tmp_path / "lmdb", PHOTOS)
    quantize_model(models["fp32"], tmp_path / "lmdb", tmp_path / "lmdb-int8.onnx", images=2)
    scales = [{i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(p)).graph.initializer
               if i.name.endswith("_scale")} for p in (models["int8"], tmp_path / "lmdb-int8.onnx")]
    assert scales[0].keys() == scales[1].keys()
    for name in scales[0]:
        np.testing.assert_array_equal(scales[0][name], scales[1][name])


def test_entropy_method_and_keep_float(models, tmp_path):
    from caffessd.inference import quantize_model

    target = tmp_path / "kept.onnx"
    report = quantize_model(models["fp32"], models["calib"], target, images=2, method="entropy",
                            keep_float=["conv1_1"])
    model = onnx.load(str(target))
    producers = {out: node for node in model.graph.node for out in node.output}
    conv1 = next(n for n in model.graph.node if n.name.split("#")[0] == "conv1_1")
    assert conv1.input[1] not in producers, "conv1_1 keeps its float weights"
    assert read_metadata(model)["quantization"]["keep_float"] == ["conv1_1"]
    assert report.method == "entropy" and [d.name for d in report.differences] == ["mbox_loc", "mbox_conf_flatten"]


def _bad_lmdb(path):
    env = lmdb.open(str(path), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"00000000_x", b"\xff\x00 definitely not a protobuf \x12\x99")
    env.close()


@pytest.mark.parametrize("case", ["empty", "undecodable", "wrong-lmdb", "empty-lmdb", "missing"])
def test_bad_calibration_input_is_one_line(models, run_cli, tmp_path, case):
    calib = tmp_path / "calib"
    if case == "empty":
        calib.mkdir()
    elif case == "undecodable":
        calib.mkdir()
        (calib / "broken.jpg").write_bytes(b"not a jpeg at all")
    elif case == "wrong-lmdb":
        _bad_lmdb(calib)
    elif case == "empty-lmdb":
        lmdb.open(str(calib), map_size=1 << 20).close()
    target = tmp_path / "out.onnx"
    result = run_cli("quantize", models["fp32"], "--calibrate", calib, "-o", target)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caffessd: error: ") and str(calib) in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not target.exists() and not list(tmp_path.glob("*.onnx*"))


def test_batch_export_quantizes_to_the_same_model(models, tmp_path):
    """A --batch 2 export calibrates on the same two photos in one run: same
    activation ranges, so the same faces as the batch-1 int8 model."""
    from caffessd.inference import quantize_model
    from caffessd.onnxconv import convert
    from caffessd.inference.detector import Detector

    fp32 = tmp_path / "face-b2.onnx"
    meta = read_metadata(models["fp32"])
    model = convert(FACE / "yufacedetectnet-open-v2.prototxt", FACE / "yufacedetectnet-open-v2.caffemodel",
                    input_shapes=(2, 3, 240, 320), metadata={k: meta[k] for k in ("mean", "scale", "channel_order", "labels")})
    fp32.write_bytes(model.SerializeToString())
    report = quantize_model(fp32, models["calib"], tmp_path / "b2-int8.onnx", images=2)
    assert [d.name for d in report.differences] == ["mbox_loc", "mbox_conf_flatten"]
    batched = Detector(onnx_path=tmp_path / "b2-int8.onnx", cache=tmp_path / "cache")
    single = Detector(onnx_path=models["int8"], cache=tmp_path / "cache")
    together = [[d.to_dict() for d in r.detections] for r in batched.detect_many(PHOTOS)]
    assert together == [[d.to_dict() for d in single(p)] for p in PHOTOS]
