"""The fixture face detector through caffessd's ONNX converter versus OpenCV 4.x's
Caffe importer, on both fixture photos.

Tolerance: 1e-4 absolute on detection rows (scores and normalised box
coordinates), 1e-4 relative (to each blob's largest magnitude) on every
intermediate blob.
"""
import numpy as np
import pytest

from caffessd.net import Net
from caffessd.onnxconv import read_preprocessing, to_onnx
from caffessd.inference.session import onnx_session, run_onnx
from onnx_parity import assert_close, assert_same_detections, cv2, opencv_forward

MEAN = (104.0, 117.0, 123.0)


@pytest.fixture(scope="module")
def face_net(face_prototxt, face_caffemodel):
    return Net.load(face_prototxt, face_caffemodel)


@pytest.fixture(scope="module")
def face_model(face_net):
    return to_onnx(face_net, metadata={"mean": MEAN, "scale": 1.0, "channel_order": "BGR"})


@pytest.fixture(scope="module")
def blobs(face_photos):
    """The same preprocessed input for both engines (OpenCV's blobFromImage)."""
    return [cv2.dnn.blobFromImage(cv2.imread(str(p)), 1.0, (320, 240), MEAN) for p in face_photos]


def _opencv_detections(prototxt, caffemodel, blob):
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setInput(blob)
    return net.forward()[0, 0]


def test_detection_out_matches_opencv(face_model, face_prototxt, face_caffemodel, blobs):
    session = onnx_session(face_model)
    for blob in blobs:
        ours = run_onnx(session, {"data": blob})["detection_out"]
        assert ours.shape[:2] == (1, 1) and ours.shape[3] == 7
        theirs = _opencv_detections(face_prototxt, face_caffemodel, blob)
        assert_same_detections(ours[0, 0], theirs)
        assert ours[0, 0, 0, 2] > 0.9, "the photo's face is the best detection"


def test_every_blob_matches_opencv(face_net, face_prototxt, face_caffemodel, blobs):
    names = [layer.name for layer in face_net.layers if layer.type not in ("DetectionOutput",)]
    model = to_onnx(face_net, extra_outputs=names)
    ours = run_onnx(model, {"data": blobs[0]})
    theirs = opencv_forward(face_prototxt, face_caffemodel, {"data": blobs[0]}, names)
    for name in names:
        assert_close(ours[name], theirs[name], name)


def test_nothing_detected_gives_opencv_zero_row(face_net, face_prototxt, face_caffemodel, blobs, tmp_path):
    strict = face_net.param.__class__()
    strict.CopyFrom(face_net.param)
    for layer in strict.layer:
        if layer.type == "DetectionOutput":
            layer.detection_output_param.confidence_threshold = 1.5
    prototxt = tmp_path / "strict.prototxt"
    from caffessd import protoio
    protoio.write_prototxt(strict, prototxt)
    model = to_onnx(Net.load(prototxt, face_caffemodel))
    ours = run_onnx(model, {"data": blobs[0]})["detection_out"]
    theirs = _opencv_detections(prototxt, face_caffemodel, blobs[0])
    assert ours.shape == (1, 1, 1, 7)
    assert not ours.any()
    assert_same_detections(ours[0, 0], theirs)


def test_opset_18_and_threads_agree(face_net, face_model, blobs):
    newer = to_onnx(face_net, opset=18)
    a = run_onnx(face_model, {"data": blobs[1]}, intra_op_threads=1)["detection_out"]
    b = run_onnx(newer, {"data": blobs[1]}, intra_op_threads=2)["detection_out"]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_preprocessing_metadata_round_trip(face_model):
    assert read_preprocessing(face_model) == {
        "mean": list(MEAN), "scale": 1.0, "input_size": [320, 240], "channel_order": "BGR"}


def test_raw_export_runs_in_opencv_and_matches_full_graph_inputs(face_net, blobs, tmp_path):
    raw = to_onnx(face_net, raw=True)
    assert [o.name for o in raw.graph.output] == ["loc", "conf", "priors"]
    path = tmp_path / "raw.onnx"
    path.write_bytes(raw.SerializeToString())
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(blobs[0])
    theirs = dict(zip(["loc", "conf", "priors"], net.forward(["loc", "conf", "priors"])))
    ours = run_onnx(raw, {"data": blobs[0]})
    assert ours["priors"].shape == (1, 2, 4 * ours["loc"].shape[1] // 4)
    for name in ("loc", "conf", "priors"):
        assert_close(ours[name], theirs[name], name)
