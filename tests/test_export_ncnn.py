"""export-ncnn, run by ncnn itself (the `ncnn` pip package) against caffessd's
ONNX path on onnxruntime.

- Every layer form the exporter writes (the per-layer nets of
  test_onnx_layers, minus the forms ncnn cannot express, which
  test_refused_forms covers): every layer's output within 1e-4 of the blob's
  largest magnitude.
- The face model and gen-model's MobileNet-SSD 300, MobileNetV2-SSDLite 300
  and MobileNetV2-SSD 640 (chosen feature layers), random weights with random
  BatchNorm statistics: mbox_loc, mbox_conf_flatten and mbox_priorbox within
  1e-4 of their magnitude on a photo, and `detect --artifact NAME.param`
  equal to `detect --model/--weights` on that photo (boxes within 0.5 px,
  scores within 1e-3; NMS near-ties may swap, see export_helpers.match_detections).
- --fp16 weights and ncnn's float16 arithmetic: the same faces on both photos (IoU >= 0.9).
- Hostile input: one line, exit status 1, no file written.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ncnn = pytest.importorskip("ncnn")

from caffessd import protoio  # noqa: E402
from caffessd.generators import plan_net  # noqa: E402
from caffessd.inference.engines import open_engine  # noqa: E402
from caffessd.export.ncnn import to_ncnn  # noqa: E402
from caffessd.export.ncnn.export import export_ncnn  # noqa: E402
from caffessd.net import Net  # noqa: E402
from caffessd.inference.session import run_onnx  # noqa: E402
from caffessd.onnxconv import read_metadata, to_onnx  # noqa: E402
from conftest import ROOT, run_in_process  # noqa: E402
from export_helpers import (NETS, assert_close, assert_same_face_rows, build_export_net, detect_json,  # noqa: E402
                            json_rows, layer_types, match_detections, onnx_outputs, photo_blob)
from onnx_parity import build_net  # noqa: E402
from test_onnx_layers import NETS as LAYER_NETS  # noqa: E402

VOC_LABELS = __import__("conftest").MNV2_REF / "ssdlite" / "voc" / "labelmap_voc.prototxt"

# Forms ncnn has no layer for (each refused by name in test_refused_forms).
NOT_EXPRESSIBLE = {
    "gated": "the scale comes from a second input blob",
    "fc_t": "inner product from axis 2",
    "bn_batch": "use_global_stats: false",
    "det_corner": "code_type CORNER",
    "det_unshared": "share_location: false",
}
DEPENDENT = {"crop2": "gated", "drop": "fc_t"}   # layers reading a refused layer's output


def _without(text: str, names) -> str:
    """The net without the named layers and those reading their outputs."""
    names = set(names) | {d for d, source in DEPENDENT.items() if source in names}
    return "".join(line + "\n" for line in text.splitlines() if not any(f'name: "{n}"' in line for n in names))


@pytest.fixture(scope="module")
def layer_nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ncnn-layers")
    drop = set(NOT_EXPRESSIBLE)
    return {name: build_net(folder, name, _without(text, drop), seed=i, loc_scale=0.02)
            for i, (name, text) in enumerate(LAYER_NETS.items())}


@pytest.mark.parametrize("name", list(LAYER_NETS))
def test_every_layer_matches_onnxruntime(layer_nets, name, tmp_path):
    prototxt, caffemodel, net = layer_nets[name]
    result = export_ncnn(prototxt, caffemodel, tmp_path)
    engine = open_engine(result.param_path)
    data = np.random.default_rng(7).normal(0, 1, net.input_shapes()["data"]).astype(np.float32)
    layers = [l.name for l in net.layers if l.type not in ("Silence", "DetectionOutput")]
    ours = engine.blobs(data[0], [result.model.layer_outputs[l][0] for l in layers])
    theirs = run_onnx(to_onnx(net, extra_outputs=layers), {"data": data})
    for layer in layers:
        assert_close(ours[result.model.layer_outputs[layer][0]], theirs[layer], f"{name}/{layer}")
    if name == "ssd":
        rows = engine.run(data)
        assert len(rows), "the test input should give detections"
        match_detections(rows, theirs["det"], 40, 30, score_tol=1e-4, px=1e-3)


def test_pooling_and_prior_forms_are_native(layer_nets, tmp_path):
    """Caffe's dropped last window becomes explicit ncnn padding; global pooling
    keeps N,C,1,1; aspect ratios are written expanded, flip off."""
    prototxt, caffemodel, _ = layer_nets["pool"]
    text = export_ncnn(prototxt, caffemodel, tmp_path / "pool").model.param
    lines = {line.split()[1]: line for line in text.splitlines()[2:]}
    assert " 5=1 " in lines["max_hw"] + " " and " 7=1 " in lines["global_max"] + " "
    prototxt, caffemodel, _ = layer_nets["ssd"]
    lines = {line.split()[1]: line for line in export_ncnn(prototxt, caffemodel, tmp_path / "ssd").model.param
             .splitlines()[2:]}
    assert "-23302=2,2.00000000e+00,5.00000000e-01 " in lines["n1_prior"] and " 7=0 " in lines["n1_prior"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ncnn-nets")
    return {name: build_export_net(folder, name) for name in NETS}


@pytest.mark.parametrize("name", list(NETS))
def test_generated_net_matches_onnxruntime_and_detect(generated, name, face_photos, tmp_path, capsys):
    prototxt, caffemodel, config = generated[name]
    run = lambda argv: run_in_process(argv, capsys)  # noqa: E731
    labels = ["--labels", VOC_LABELS] if config.num_classes == 21 else []
    code, err, out = run(["export-ncnn", prototxt, caffemodel, "-o", tmp_path / "ncnn", *labels])
    assert code == 0, err
    assert "preprocessing: mean 127.5, scale 0.007843, BGR" in err    # from the net's caffessd note
    param = next((tmp_path / "ncnn").glob("*.param"))
    types = layer_types(param.read_text())
    assert types["BatchNorm"] > 10 and types["PriorBox"] == len(plan_net(config).feature_layers)
    if config.relu6:
        assert "Clip" in types and "ReLU6" not in types

    blob = photo_blob(face_photos[0], config.input_width, config.input_height, 127.5, 0.007843)
    engine = open_engine(param)
    names = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
    ours = engine.blobs(blob[0], names)
    theirs = onnx_outputs(prototxt, caffemodel, blob, names)
    for blob_name in names:
        assert_close(ours[blob_name], theirs[blob_name], f"{name}/{blob_name}")

    reference = detect_json(run, [face_photos[0], "--model", prototxt, "--weights", caffemodel, "--threshold", 0],
                            tmp_path, "caffe")[0]
    exported = detect_json(run, [face_photos[0], "--artifact", param, "--threshold", 0], tmp_path, "ncnn")[0]
    keep = [l for l in Net.load(prototxt).layers if l.type == "DetectionOutput"][0].detection_output_param.keep_top_k
    ref_rows = json_rows(reference)
    assert len(ref_rows) > 5, "the random net should find something to compare"
    cut = ref_rows[:, 2].min() if len(ref_rows) == keep else -np.inf
    matched = match_detections(json_rows(exported), ref_rows, reference["width"], reference["height"], cut=cut)
    assert matched >= 0.9 * len(ref_rows)
    if labels:   # the class names the export recorded come out of detect
        names = protoio.labelmap_names(VOC_LABELS)
        assert all(d["name"] == names[d["label"]] for d in exported["detections"])


def test_face_model_blobs_and_detections(face_prototxt, face_caffemodel, face_photos, tmp_path, capsys):
    run = lambda argv: run_in_process(argv, capsys)  # noqa: E731
    code, err, out = run(["export-ncnn", face_prototxt, face_caffemodel, "-o", tmp_path / "face.param"])
    assert code == 0, err
    assert {p.name for p in tmp_path.iterdir()} == {"face.param", "face.bin", "face.caffessd.json"}
    engine = open_engine(tmp_path / "face.param")
    names = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
    for photo in face_photos:
        blob = photo_blob(photo, 320, 240)
        theirs = onnx_outputs(face_prototxt, face_caffemodel, blob, names)
        ours = engine.blobs(blob[0], names)
        for name in names:
            assert_close(ours[name], theirs[name], name)
    threshold = ["--threshold", 0.02]
    reference = detect_json(run, [*face_photos, *threshold], tmp_path, "caffe")
    exported = detect_json(run, [*face_photos, "--artifact", tmp_path / "face.param", *threshold], tmp_path, "ncnn")
    for theirs, ours in zip(reference, exported):
        rows = json_rows(theirs)
        assert len(rows) >= 3 and rows[0, 2] > 0.99
        assert match_detections(json_rows(ours), rows, theirs["width"], theirs["height"]) == len(rows)


def test_input_size(face_prototxt, face_caffemodel, face_photos, tmp_path, capsys):
    """--input-size 640x480: ncnn's PriorBox follows the new maps; rows equal the ONNX export at that size."""
    code, err, _ = run_in_process(["export-ncnn", face_prototxt, face_caffemodel, "-o", tmp_path,
                                   "--input-size", "640x480"], capsys)
    assert code == 0, err
    engine = open_engine(next(tmp_path.glob("*.param")))
    assert engine.metadata["input_size"] == [640, 480] and engine.metadata["inputs"]["data"] == [1, 3, 480, 640]
    blob = photo_blob(face_photos[1], 640, 480)
    net = Net.load(face_prototxt, face_caffemodel)
    theirs = run_onnx(to_onnx(net, input_shapes=(1, 3, 480, 640)), {"data": blob})["detection_out"]
    ours = engine.run(blob)
    assert len(ours) >= 3 and match_detections(ours, theirs, 640, 480) == len(ours)


def test_metadata_is_the_onnx_exports(face_prototxt, face_caffemodel, tmp_path):
    """The sidecar holds what export-onnx stores for the same net and options."""
    from caffessd.commands.export_options import export_metadata

    metadata, _ = export_metadata(face_prototxt, "104,117,123", 0.5, True, None)
    result = export_ncnn(face_prototxt, face_caffemodel, tmp_path, metadata=metadata)
    sidecar = json.loads(result.sidecar_path.read_text())
    facts = sidecar.pop("ncnn")
    onnx_facts = read_metadata(to_onnx(Net.load(face_prototxt, face_caffemodel), metadata=metadata))
    assert sidecar == json.loads(json.dumps(onnx_facts))
    assert facts["outputs"] == ["detection_out"] and facts["weights"] == "float32"


def test_fp16_weights_and_arithmetic_find_the_same_faces(face_prototxt, face_caffemodel, face_photos, tmp_path):
    full = export_ncnn(face_prototxt, face_caffemodel, tmp_path / "fp32")
    half = export_ncnn(face_prototxt, face_caffemodel, tmp_path / "fp16", fp16=True)
    assert half.bin_path.stat().st_size < 0.55 * full.bin_path.stat().st_size
    engines = [open_engine(full.param_path), open_engine(half.param_path),
               open_engine(half.param_path, precision="f16")]
    assert_same_face_rows(engines, face_photos, 320, 240, score_tol=0.01)


def test_folded_batchnorm(generated, face_photos, tmp_path):
    prototxt, caffemodel, config = generated["mobilenet-ssd-300"]
    result = export_ncnn(prototxt, caffemodel, tmp_path, fold_bn=True)
    types = layer_types(result.model.param)
    assert "BatchNorm" not in types and "Scale" not in types and len(result.folded) > 30
    blob = photo_blob(face_photos[1], 300, 300, 127.5, 0.007843)
    ours = open_engine(result.param_path).blobs(blob[0], ["mbox_loc", "mbox_conf_flatten"])
    theirs = onnx_outputs(prototxt, caffemodel, blob, ["mbox_loc", "mbox_conf_flatten"])
    for name in ours:
        assert_close(ours[name], theirs[name], name)


def test_raw_export_outputs_loc_conf_priors(face_prototxt, face_caffemodel, face_photos, tmp_path):
    result = export_ncnn(face_prototxt, face_caffemodel, tmp_path, raw=True)
    assert "DetectionOutput" not in result.model.param
    engine = open_engine(result.param_path)
    blob = photo_blob(face_photos[0], 320, 240)
    ours = engine.outputs(blob)
    theirs = run_onnx(to_onnx(Net.load(face_prototxt, face_caffemodel), raw=True), {"data": blob})
    for name in ("loc", "conf", "priors"):
        assert ours[name].shape == theirs[name].shape
        assert_close(ours[name], theirs[name], name)
    assert engine.metadata["kind"] == "raw"


# ---------------------------------------------------------------- hostile input

@pytest.mark.parametrize("layer,why", sorted(NOT_EXPRESSIBLE.items()))
def test_refused_forms(layer, why, tmp_path, capsys):
    name = next(n for n, text in LAYER_NETS.items() if f'name: "{layer}"' in text)
    others = set(NOT_EXPRESSIBLE) - {layer}
    text = LAYER_NETS[name].replace('name: "fc_t" type: "InnerProduct" bottom: "crop2"',   # crop2 reads 'gated'
                                    'name: "fc_t" type: "InnerProduct" bottom: "b"')
    prototxt, caffemodel, _ = build_net(tmp_path, name, _without(text, others), loc_scale=0.02)
    code, err, _ = run_in_process(["export-ncnn", prototxt, caffemodel, "-o", tmp_path / "out"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"layer '{layer}'" in err and why in err and "ncnn" in err
    assert not (tmp_path / "out").exists()


def test_unknown_layer_type_and_overhanging_average_pooling_are_refused(tmp_path, capsys):
    from test_onnx_layers import _input, _layer

    text = _input("data", 1, 3, 8, 8) + _layer("lrn", "LRN", "data")
    prototxt, caffemodel, _ = build_net(tmp_path, "lrn", text)
    code, err, _ = run_in_process(["export-ncnn", prototxt, caffemodel, "-o", tmp_path / "a"], capsys)
    assert code == 1 and "layer 'lrn' has type 'LRN'" in err and not (tmp_path / "a").exists()
    text = _input("data", 1, 3, 8, 8) + _layer("avg", "Pooling", "data", params="pooling_param { pool: AVE "
                                                                                "kernel_size: 3 stride: 2 pad: 1 }")
    prototxt, caffemodel, _ = build_net(tmp_path, "avg", text)
    code, err, _ = run_in_process(["export-ncnn", prototxt, caffemodel, "-o", tmp_path / "b"], capsys)
    assert code == 1 and "layer 'avg'" in err and "average pooling" in err and not (tmp_path / "b").exists()


def test_outputs_that_name_an_input_are_refused(face_prototxt, face_caffemodel, tmp_path, capsys):
    import shutil

    prototxt = tmp_path / "net.prototxt"
    shutil.copy(face_prototxt, prototxt)
    weights = tmp_path / "YuFaceDetectNet.bin"      # the name the export would give its weights
    shutil.copy(face_caffemodel, weights)
    before = sorted(p.name for p in tmp_path.iterdir())
    for target in (tmp_path, prototxt, tmp_path / "YuFaceDetectNet.param"):
        code, err, _ = run_in_process(["export-ncnn", prototxt, weights, "-o", target], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert "would overwrite the caffemodel" in run_in_process(
        ["export-ncnn", prototxt, weights, "-o", tmp_path], capsys)[1]


def test_missing_runtime_and_damaged_weights(face_prototxt, face_caffemodel, face_photos, tmp_path, capsys,
                                             monkeypatch):
    result = export_ncnn(face_prototxt, face_caffemodel, tmp_path)
    result.bin_path.write_bytes(result.bin_path.read_bytes()[:1000])
    code, err, _ = run_in_process(["detect", face_photos[0], "--artifact", result.param_path, "--out",
                                   tmp_path / "d"], capsys)
    assert code == 1 and "cannot read it as the weights" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(__import__("sys").modules, "ncnn", None)
    code, err, _ = run_in_process(["detect", face_photos[0], "--artifact", result.param_path, "--out",
                                   tmp_path / "d"], capsys)
    assert code == 1 and "pip install 'caffessd[ncnn]'" in err and len(err.strip().splitlines()) == 1


def test_exporter_covers_the_onnx_converters_layer_types():
    from caffessd.export.ncnn import SUPPORTED_LAYERS
    from caffessd.onnxconv import SUPPORTED_LAYERS as ONNX_LAYERS

    assert set(ONNX_LAYERS) <= set(SUPPORTED_LAYERS)
    net = Net.load(__import__("conftest").FACE_PROTOTXT, __import__("conftest").FACE_CAFFEMODEL)
    assert to_ncnn(net).param.startswith("7767517\n")


def test_wait_policy_spins_on_free_cores_and_sleeps_on_busy_ones(face_prototxt, face_caffemodel, tmp_path):
    """libgomp's bounded spin on free cores (3.7x faster for the face net here),
    PASSIVE once more threads are runnable than there are cores, and the user's
    own OMP_WAIT_POLICY / GOMP_SPINCOUNT never overridden."""
    from caffessd.inference.engines import ncnn_engine

    assert ncnn_engine.wait_policy({}, load_average=0.3, cpus=2) is None
    assert ncnn_engine.wait_policy({}, load_average=2.0, cpus=2) is None
    assert ncnn_engine.wait_policy({}, load_average=15.0, cpus=2) == "PASSIVE"
    assert ncnn_engine.wait_policy({"OMP_WAIT_POLICY": "ACTIVE"}, load_average=15.0, cpus=2) is None
    assert ncnn_engine.wait_policy({"GOMP_SPINCOUNT": "1000"}, load_average=15.0, cpus=2) is None

    # The policy only counts before ncnn is first loaded, so each case opens the engine in a
    # fresh Python with the load average it names.
    export_ncnn(face_prototxt, face_caffemodel, tmp_path / "face")
    param = next((tmp_path / "face").glob("*.param"))
    child = ("import os, sys; load = float(sys.argv[2]); os.getloadavg = lambda: (load, load, load); "
             "from caffessd.inference.engines import open_engine; open_engine(sys.argv[1]); "
             "first = os.environ.get('OMP_WAIT_POLICY'); os.getloadavg = lambda: (99.0,) * 3; "
             "open_engine(sys.argv[1]); print(first, os.environ.get('OMP_WAIT_POLICY'))")

    def policy_in_child(load, **extra):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        env.update(extra, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
        out = subprocess.run([sys.executable, "-c", child, str(param), str(load)], capture_output=True,
                             text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    # A second open, with ncnn loaded, leaves the environment as the first one set it.
    assert policy_in_child(0.5) == ["None", "None"]
    assert policy_in_child(40.0) == ["PASSIVE", "PASSIVE"]
    assert policy_in_child(40.0, OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "ACTIVE"]
