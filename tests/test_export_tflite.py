"""export-tflite, run by LiteRT (the `ai-edge-litert` pip package) against
caffessd's ONNX path on onnxruntime.

float32 models: loc, conf and priors within 1e-4 of each blob's magnitude
(the --raw export on the face photos; extra outputs of the full model for the
generated nets), and `detect --artifact NAME.tflite` equal to `detect
--model/--weights` (boxes within 0.5 px, scores within 1e-3, NMS near-ties may
swap; see export_helpers.match_detections).

What TFLite_Detection_PostProcess does differently (caffessd.export.tflite.
postprocess): with --candidates all (the op's own cap on NMS survivors
instead of Caffe's top_k cap on NMS candidates), the detections scoring at
least their class's top_k-th best candidate are Caffe's, and below that
Caffe's are a subset of TFLite's (test_op_semantics_without_caffes_top_k).
--nms fast is class-agnostic (test_ssd_layer_forms_and_fast_nms).
fp16 and int8 (calibrated on the photos): the same faces (IoU >= 0.9).
"""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from caffessd.inference.engines import open_engine  # noqa: E402
from caffessd.net import Net  # noqa: E402
from caffessd.inference.session import run_onnx  # noqa: E402
from caffessd.onnxconv import read_metadata, to_onnx  # noqa: E402
from caffessd.export.tflite import FULL_OUTPUTS  # noqa: E402
from caffessd.export.tflite.export import export_tflite  # noqa: E402
from conftest import run_in_process  # noqa: E402
from export_helpers import (NETS, assert_close, assert_same_face_rows, build_export_net, detect_json,  # noqa: E402
                            iou, json_rows, match_detections, onnx_outputs, photo_blob, scored_rows)
from onnx_parity import build_net  # noqa: E402
from test_onnx_layers import NETS as LAYER_NETS  # noqa: E402

BLOBS = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]


def top_k_floor(conf: np.ndarray, classes: int, top_k: int, threshold: float) -> dict:
    """Per class, the score of its top_k-th best candidate above the threshold
    (the threshold itself when it has fewer): detections at or above it are
    the same in Caffe's DetectionOutput and TFLite's regular NMS."""
    scores = conf.reshape(-1, classes)
    floors = {}
    for label in range(1, classes):
        above = np.sort(scores[:, label][scores[:, label] > threshold])[::-1]
        floors[label] = float(above[top_k - 1]) if len(above) >= top_k else threshold
    return floors


def compare_with_caffe(ours, reference, width, height, floors, keep_top_k, score_tol=1e-3):
    """detect's rows (`reference`, Caffe semantics) against TFLite's (`ours`).
    Equal above each class's top_k floor; below it Caffe's rows must be among
    TFLite's, which may have more; near the keep_top_k cut either side may
    hold a near-tie. Returns (rows matched, reference rows that must match:
    above their class's floor and TFLite's cut)."""
    # Below the floor (scores agree across the runtimes to ~1e-6): TFLite may add.
    below = lambda row: row[2] <= floors[int(row[1])] + 1e-5  # noqa: E731
    ours, reference = scored_rows(ours), scored_rows(reference)
    cut = ours[:, 2].min() if len(ours) == keep_top_k else -np.inf
    missing_ok = lambda row: row[2] < cut - score_tol  # noqa: E731 (TFLite's full list cut it off)
    matched = match_detections(ours, reference, width, height, score_tol=score_tol, cut=cut,
                               may_miss=missing_ok, may_add=below)
    required = sum(not below(row) and row[2] > cut + score_tol for row in reference)
    return matched, required


@pytest.fixture(scope="module")
def face_fp32(tmp_path_factory, face_prototxt, face_caffemodel):
    from caffessd.commands.export_options import export_metadata

    folder = tmp_path_factory.mktemp("tflite-face")
    metadata, _ = export_metadata(face_prototxt, None, None, None, None)   # what the command passes
    return export_tflite(face_prototxt, face_caffemodel, folder / "face.tflite", extra_outputs=BLOBS,
                         metadata=metadata)


def test_face_detections_equal_detect(face_fp32, face_prototxt, face_caffemodel, face_photos, tmp_path, capsys):
    run = lambda argv: run_in_process(argv, capsys)  # noqa: E731
    model = face_fp32.path
    assert face_fp32.model.outputs[:4] == list(FULL_OUTPUTS)
    threshold = ["--threshold", 0.02]
    reference = detect_json(run, [*face_photos, *threshold], tmp_path, "caffe")
    exported = detect_json(run, [*face_photos, "--artifact", model, *threshold], tmp_path, "tflite")
    for theirs, ours in zip(reference, exported):
        rows = json_rows(theirs)
        assert len(rows) >= 3 and rows[0, 2] > 0.99
        assert match_detections(json_rows(ours), rows, theirs["width"], theirs["height"]) == len(rows)


def test_op_semantics_without_caffes_top_k(face_prototxt, face_caffemodel, face_photos, tmp_path):
    """--candidates all: NMS on all of a class's candidates, top_k survivors
    kept. The face net has ~4400 candidates above its 0.01 threshold and
    top_k 100: equal to Caffe's above the 100th best candidate's score,
    more detections below it (survivors Caffe never considered)."""
    result = export_tflite(face_prototxt, face_caffemodel, tmp_path / "all.tflite", candidates="all",
                           extra_outputs=["mbox_conf_flatten"])
    assert result.model.postprocess["candidates_per_class"] is None
    engine = open_engine(result.path)
    net = Net.load(face_prototxt, face_caffemodel)
    for photo in face_photos:
        blob = photo_blob(photo, 320, 240)
        conf = engine.outputs(blob)["mbox_conf_flatten"]
        floors = top_k_floor(conf, 2, 100, 0.01)
        theirs = scored_rows(run_onnx(to_onnx(net), {"data": blob})["detection_out"])
        ours = engine.run(blob)
        matched, required = compare_with_caffe(ours, theirs, 640, 480, floors, 50)
        assert matched >= required >= 3
        assert len(scored_rows(ours)) > len(theirs)      # the extra survivors below the floor


def test_face_raw_blobs(face_prototxt, face_caffemodel, face_photos, tmp_path, capsys):
    """--raw, converted for another input size (--input-size 640x480)."""
    code, err, out = run_in_process(["export-tflite", face_prototxt, face_caffemodel, "-o", tmp_path / "raw.tflite",
                                     "--raw", "--input-size", "640x480"], capsys)
    assert code == 0, err
    assert "outputs loc, conf, priors" in out
    engine = open_engine(tmp_path / "raw.tflite")
    assert engine.metadata["kind"] == "raw" and engine.metadata["input_size"] == [640, 480]
    net = Net.load(face_prototxt, face_caffemodel)
    for photo in face_photos:
        blob = photo_blob(photo, 640, 480)
        ours = engine.outputs(blob)
        theirs = run_onnx(to_onnx(net, raw=True, input_shapes=(1, 3, 480, 640)), {"data": blob})
        for name in ("loc", "conf", "priors"):
            assert ours[name].shape == theirs[name].shape, name
            assert_close(ours[name], theirs[name], name)
    code, err, _ = run_in_process(["detect", face_photos[0], "--artifact", tmp_path / "raw.tflite", "--out",
                                   tmp_path / "d"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", list(NETS))
def test_generated_net(name, tmp_path, face_photos, capsys):
    prototxt, caffemodel, config = build_export_net(tmp_path / "net", name)
    result = export_tflite(prototxt, caffemodel, tmp_path / f"{name}.tflite", extra_outputs=BLOBS)
    assert result.model.postprocess["y_scale"] == pytest.approx(10.0) and result.model.postprocess["h_scale"] == \
        pytest.approx(5.0)
    blob = photo_blob(face_photos[0], config.input_width, config.input_height, 127.5, 0.007843)
    engine = open_engine(result.path)
    ours = engine.outputs(blob)
    theirs = onnx_outputs(prototxt, caffemodel, blob, BLOBS)
    for blob_name in BLOBS:
        assert_close(ours[blob_name], theirs[blob_name], f"{name}/{blob_name}")

    run = lambda argv: run_in_process(argv, capsys)  # noqa: E731
    reference = detect_json(run, [face_photos[0], "--model", prototxt, "--weights", caffemodel, "--threshold", 0],
                            tmp_path, "caffe")[0]
    exported = detect_json(run, [face_photos[0], "--artifact", result.path, "--threshold", 0], tmp_path, "tfl")[0]
    settings = engine.metadata["detection_output"]
    rows = json_rows(reference)
    assert len(rows) > 5, "the random net should find something to compare"
    cut = rows[:, 2].min() if len(rows) == settings["keep_top_k"] else -np.inf
    matched = match_detections(json_rows(exported), rows, reference["width"], reference["height"], cut=cut)
    assert matched >= 0.9 * len(rows)     # the rest: NMS near-ties, paired up, or at the keep_top_k cut


def test_ssd_layer_forms_and_fast_nms(tmp_path):
    """Normalize, PriorBox variants (clip, img_h/w, step_h/w, offset, one
    variance), 3 classes; regular NMS equals Caffe's (few candidates per
    class here), fast NMS is class-agnostic: no two of its boxes overlap
    beyond the NMS threshold, whatever their classes."""
    text = "".join(line + "\n" for line in LAYER_NETS["ssd"].splitlines()
                   if 'name: "det_corner"' not in line and 'name: "det_unshared"' not in line)
    prototxt, caffemodel, net = build_net(tmp_path, "ssd", text, seed=3, loc_scale=0.02)
    data = np.random.default_rng(3).normal(0, 1, net.input_shapes()["data"]).astype(np.float32)
    theirs = run_onnx(to_onnx(net, extra_outputs=["conf_flat"]), {"data": data})
    regular = open_engine(export_tflite(prototxt, caffemodel, tmp_path / "regular.tflite").path)
    fast = open_engine(export_tflite(prototxt, caffemodel, tmp_path / "fast.tflite", nms="fast").path)
    rows = regular.run(data)
    assert len(rows) > 3
    assert match_detections(rows, theirs["det"], 40, 30, score_tol=1e-4, px=1e-3) == len(rows)
    boxes = fast.run(data)
    assert len(boxes) and len(set(boxes[:, 1])) > 1
    for i in range(len(boxes)):
        for j in range(i):
            assert iou(boxes[i, 3:7], boxes[j, 3:7]) <= 0.45 + 1e-6
    assert fast.metadata["tflite"]["nms"] == "fast"


def test_fp16_and_int8_find_the_same_faces(face_fp32, face_prototxt, face_caffemodel, face_photos, tmp_path, capsys):
    calibration = tmp_path / "photos"
    calibration.mkdir()
    for photo in face_photos:
        shutil.copy(photo, calibration)
    half = export_tflite(face_prototxt, face_caffemodel, tmp_path / "fp16.tflite", precision="float16")
    code, err, out = run_in_process(["export-tflite", face_prototxt, face_caffemodel, "-o", tmp_path / "int8.tflite",
                                     "--int8", "--calibrate", calibration], capsys)
    assert code == 0, err
    assert "int8, calibrated on 2 image(s)" in out
    full_size = face_fp32.path.stat().st_size
    assert half.path.stat().st_size < 0.6 * full_size
    assert (tmp_path / "int8.tflite").stat().st_size < 0.4 * full_size
    engines = [open_engine(p) for p in (face_fp32.path, half.path, tmp_path / "int8.tflite")]
    assert_same_face_rows(engines, face_photos, 320, 240)


def test_metadata_is_the_onnx_exports(face_fp32, face_prototxt, face_caffemodel):
    sidecar = json.loads(face_fp32.sidecar_path.read_text())
    facts = sidecar.pop("tflite")
    onnx_facts = read_metadata(to_onnx(Net.load(face_prototxt, face_caffemodel), metadata={
        "channel_order": "BGR", "mean": None, "scale": None}))
    assert sidecar == json.loads(json.dumps(onnx_facts))
    assert facts["input_shape"] == [1, 240, 320, 3] and facts["postprocess"]["max_detections"] == 50
    assert facts["postprocess"]["detections_per_class"] == 100 and facts["postprocess"]["num_classes"] == 1
    assert facts["postprocess"]["candidates_per_class"] == 100 and facts["candidates"] == "caffe"


# ---------------------------------------------------------------- hostile input

def test_refused_post_processing_and_layers(tmp_path, capsys):
    text = "".join(line + "\n" for line in LAYER_NETS["ssd"].splitlines()
                   if 'name: "det"' not in line and 'name: "det_unshared"' not in line)
    prototxt, caffemodel, _ = build_net(tmp_path, "ssd", text, seed=3)
    code, err, _ = run_in_process(["export-tflite", prototxt, caffemodel, "-o", tmp_path / "a.tflite"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "layer 'det_corner'" in err and "TFLite_Detection_PostProcess" in err and "CORNER" in err
    from test_onnx_layers import _input, _layer

    prototxt, caffemodel, _ = build_net(tmp_path, "lrn", _input("data", 1, 3, 8, 8) + _layer("lrn", "LRN", "data"))
    code, err, _ = run_in_process(["export-tflite", prototxt, caffemodel, "-o", tmp_path / "b.tflite"], capsys)
    assert code == 1 and "layer 'lrn' has type 'LRN'" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".caffemodel", ".caffemodel", ".prototxt", ".prototxt"]


def test_bad_outputs_and_options(face_prototxt, face_caffemodel, tmp_path, capsys):
    weights = tmp_path / "w.tflite"
    shutil.copy(face_caffemodel, weights)
    cases = [(["-o", weights], "would overwrite the caffemodel"),
             (["-o", tmp_path / "model.onnx"], "must end in .tflite"),
             (["-o", tmp_path / "m.tflite", "--int8"], "--int8 needs --calibrate"),
             (["-o", tmp_path / "m.tflite", "--calibrate", tmp_path], "only used with --int8"),
             (["-o", tmp_path / "m.tflite", "--int8", "--calibrate", tmp_path / "none"], "no such file or folder")]
    for options, message in cases:
        code, err, _ = run_in_process(["export-tflite", face_prototxt, weights, *options], capsys)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.tflite"]


def test_missing_runtimes(face_fp32, face_prototxt, face_caffemodel, face_photos, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    code, err, _ = run_in_process(["detect", face_photos[0], "--artifact", face_fp32.path, "--out", tmp_path / "d"],
                                  capsys)
    assert code == 1 and "pip install 'caffessd[tflite]'" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    code, err, _ = run_in_process(["export-tflite", face_prototxt, face_caffemodel, "-o", tmp_path / "m.tflite"],
                                  capsys)
    assert code == 1 and "pip install 'caffessd[tf]'" in err and not (tmp_path / "m.tflite").exists()


def test_pooling_forms(tmp_path):
    """Ceil-mode, padded and global pooling (MAX pads by edge replication in the
    TFLite graph, so that int8 ranges stay those of the data): every layer
    within 1e-4 of onnxruntime."""
    from caffessd.export.tflite import to_tflite

    prototxt, caffemodel, net = build_net(tmp_path, "pool", LAYER_NETS["pool"], seed=2)
    layers = [layer.name for layer in net.layers]
    data = np.random.default_rng(5).normal(0, 1, net.input_shapes()["data"]).astype(np.float32)
    theirs = run_onnx(to_onnx(net, extra_outputs=layers), {"data": data})
    model = to_tflite(net, extra_outputs=layers)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model.content)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], data.transpose(0, 2, 3, 1).copy())
    interpreter.invoke()
    outputs = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    for layer in layers:   # blobs come out in Caffe's NCHW order
        assert outputs[layer].shape == theirs[layer].shape
        assert_close(outputs[layer], theirs[layer], layer)
