"""Shape inference and `caffessd inspect`, cross-checked against OpenCV 4.x."""
import json

import numpy as np
import pytest

from caffessd import protoio
from caffessd.net import Net
from caffessd.summary import summarize
from conftest import MNV1_REF, MNV2_REF

cv2 = pytest.importorskip("cv2")

FACE_INPUT = (1, 3, 240, 320)


def opencv_layer_output_shapes(prototxt, caffemodel, input_shape):
    """{layer name: shape of its first output} from a real OpenCV forward pass."""
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.enableFusion(False)  # keep every layer's own output
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    names = list(net.getLayerNames())
    net.setInput(np.random.default_rng(0).uniform(0, 255, input_shape).astype(np.float32))
    outputs = net.forward(names)
    return {name: tuple(out.shape) for name, out in zip(names, outputs)}


def test_face_detector_shapes_match_opencv(face_prototxt, face_caffemodel):
    ours = {info.name: info.output_shapes[0] for info in Net.load(face_prototxt, face_caffemodel).walk() if info.output_shapes}
    theirs = opencv_layer_output_shapes(face_prototxt, face_caffemodel, FACE_INPUT)
    compared = 0
    for name, shape in ours.items():
        if name not in theirs:
            continue
        if name == "detection_out":  # row count depends on the image
            assert theirs[name][:2] == (1, 1) and theirs[name][3] == 7
        else:
            assert theirs[name] == shape, name
        compared += 1
    assert compared >= 60, f"only {compared} layers compared"


def test_total_params_equal_caffemodel_blob_sizes(face_prototxt, face_caffemodel):
    summary = summarize(face_prototxt, face_caffemodel)
    model = protoio.read_caffemodel(face_caffemodel)
    stored = sum(int(np.prod(protoio.blob_shape(b))) for layer in model.layer for b in layer.blobs)
    assert summary.total_params == stored
    # Without weights the counts come from the prototxt's implied shapes: same total.
    assert summarize(face_prototxt).total_params == stored
    assert summary.total_multiply_adds > 100_000_000


def test_inspect_cli_table_and_json(run_cli, face_prototxt, face_caffemodel):
    result = run_cli("inspect", str(face_prototxt), "--weights", str(face_caffemodel))
    assert result.returncode == 0, result.stderr
    assert "detection_out" in result.stdout and "DetectionOutput" in result.stdout
    assert "873,632 parameters" in result.stdout
    result = run_cli("inspect", str(face_prototxt), "--json")
    data = json.loads(result.stdout)
    by_name = {layer["name"]: layer for layer in data["layers"]}
    assert by_name["conv1_1"]["output_shapes"] == [[1, 32, 120, 160]]
    assert by_name["mbox_priorbox"]["output_shapes"] == [[1, 2, 17680]]
    assert data["total_params"] == 873632


def test_inspect_input_shape_override(run_cli, face_prototxt):
    result = run_cli("inspect", str(face_prototxt), "--json", "--input-shape", "1,3,480,640")
    data = json.loads(result.stdout)
    assert data["inputs"]["data"] == [1, 3, 480, 640]
    assert {l["name"]: l for l in data["layers"]}["conv1_1"]["output_shapes"] == [[1, 32, 240, 320]]


@pytest.mark.parametrize("path", [
    MNV1_REF / "voc" / "MobileNetSSD_deploy.prototxt",
    MNV2_REF / "ssdlite" / "voc" / "deploy.prototxt",
    MNV2_REF / "voc" / "deploy.prototxt",
], ids=["mnv1-ssd", "mnv2-ssdlite", "mnv2-ssd"])
def test_reference_deploy_nets_shapes_match_opencv(path, tmp_path):
    """Published deploy nets with random weights: every layer's shape agrees with OpenCV."""
    net = Net.load(path)
    rng = np.random.default_rng(1)
    model = protoio.read_prototxt(path)
    shapes = {info.name: info.param_shapes for info in net.walk()}
    for layer in model.layer:
        for shape in shapes.get(layer.name, []):
            protoio.array_to_blob(rng.uniform(0.5, 1.0, shape).astype(np.float32) * 0.1, layer.blobs.add())
    weights = protoio.write_caffemodel(model, tmp_path / "random.caffemodel")
    input_shape = next(iter(net.input_shapes().values()))
    theirs = opencv_layer_output_shapes(path, weights, input_shape)
    names = [layer.name for layer in model.layer]
    # The published mnv2 nets reuse the name "slice" for every TF-padding Slice;
    # a name lookup in OpenCV is ambiguous for those, so compare unique names.
    ours = {info.name: info.output_shapes[0] for info in net.walk()
            if info.output_shapes and names.count(info.name) == 1}
    mismatched = [(n, s, theirs[n]) for n, s in ours.items()
                  if n in theirs and n != "detection_out" and theirs[n] != s]
    assert not mismatched
    assert len(set(ours) & set(theirs)) > 50


def test_inspect_errors_are_one_line(run_cli, tmp_path, face_caffemodel):
    result = run_cli("inspect", str(tmp_path / "missing.prototxt"))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "missing.prototxt: no such file" in result.stderr
    result = run_cli("inspect", str(face_caffemodel))
    assert result.returncode == 1 and "Traceback" not in result.stderr
