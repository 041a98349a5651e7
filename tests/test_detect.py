"""`caffessd detect` and the Detector API on the embedded face detector."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from caffessd.image.preprocess import load_image, make_blob
from caffessd.inference.detector import Detector, default_model, sample_image

cv2 = pytest.importorskip("cv2")


@pytest.fixture
def cli_env(model_cache):
    return {**os.environ, "CAFFESSD_CACHE": str(model_cache)}


def opencv_faces(photo, threshold=0.5):
    """Faces OpenCV 4.x finds with the same model on the same blob."""
    spec = default_model()
    net = cv2.dnn.readNetFromCaffe(str(spec.prototxt), str(spec.caffemodel))
    net.setInput(make_blob(load_image(photo), spec.preprocessing))
    rows = net.forward().reshape(-1, 7)
    return rows[rows[:, 2] >= threshold]


def test_detector_finds_the_face_opencv_finds(detector, face_photos):
    for photo in face_photos:
        found = detector(photo)
        reference = opencv_faces(photo)
        assert len(found) == len(reference) == 1, photo
        assert found[0].name == "face" and found[0].score > 0.9
        # Same blob into both engines: boxes agree to 1e-4 (normalised).
        assert np.allclose(found[0].box_normalized, reference[0, 3:7], atol=1e-4)
        width, height = Image.open(photo).size
        x0, y0, x1, y1 = found[0].box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def test_detect_without_arguments_uses_embedded_model_and_sample(run_cli, tmp_path, cli_env):
    result = run_cli("detect", cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "keliamoniz1.jpg: 1 detection(s)" in result.stdout and "face" in result.stdout
    annotated = tmp_path / "detections" / "keliamoniz1.jpg"
    with Image.open(annotated) as image:
        assert image.size == (640, 480)
        # Boxes were drawn: the annotated copy differs from the photo.
        assert np.abs(np.asarray(image, dtype=np.int16) - np.asarray(Image.open(sample_image()), dtype=np.int16)).max() > 100
    data = json.loads((tmp_path / "detections" / "detections.json").read_text())
    assert data[0]["detections"][0]["name"] == "face" and data[0]["detections"][0]["score"] > 0.9


def test_second_run_uses_the_cached_conversion(run_cli, tmp_path, cli_env, face_photos):
    run_cli("detect", face_photos[0], "--out", tmp_path / "a", env=cli_env)
    before = sorted(os.listdir(cli_env["CAFFESSD_CACHE"]))
    result = run_cli("detect", face_photos[0], "--out", tmp_path / "b", env=cli_env)
    assert result.returncode == 0 and "converted" not in result.stderr
    assert sorted(os.listdir(cli_env["CAFFESSD_CACHE"])) == before
    assert len([n for n in before if n.endswith(".onnx")]) == 1


def test_fresh_cache_converts_once(run_cli, tmp_path, face_photos):
    env = {**os.environ, "CAFFESSD_CACHE": str(tmp_path / "fresh")}
    first = run_cli("detect", face_photos[1], "--out", tmp_path / "out", env=env)
    second = run_cli("detect", face_photos[1], "--out", tmp_path / "out", env=env)
    assert "converted" in first.stderr and "converted" not in second.stderr


def test_folder_of_images_with_json_file(run_cli, tmp_path, cli_env, face_photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in face_photos:
        (folder / photo.name).write_bytes(photo.read_bytes())
    result = run_cli("detect", folder, "--out", tmp_path / "out", "--json", tmp_path / "all.json", env=cli_env)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "all.json").read_text())
    assert [len(entry["detections"]) for entry in data] == [1, 1]
    assert len(list((tmp_path / "out").glob("*.jpg"))) == 2


def test_corrupt_image_is_one_clear_line(run_cli, tmp_path, cli_env):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = run_cli("detect", bad, "--out", tmp_path / "out", env=cli_env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"caffessd: error: {bad}: cannot decode image")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "detections.json").exists()


def test_missing_image_is_one_clear_line(run_cli, tmp_path, cli_env):
    result = run_cli("detect", tmp_path / "nope.jpg", env=cli_env)
    assert result.returncode == 1
    assert result.stderr.strip() == f"caffessd: error: {tmp_path / 'nope.jpg'}: no such file"


def test_threshold_filters(detector, face_photos):
    strict = Detector(onnx_path=detector.onnx_path, threshold=0.9999)
    assert len(strict(face_photos[0])) <= len(detector(face_photos[0]))
    loose = Detector(onnx_path=detector.onnx_path, threshold=0.01)
    assert len(loose(face_photos[0])) >= 1


def test_exported_onnx_carries_preprocessing_and_labels(run_cli, tmp_path, face_prototxt, face_caffemodel, face_photos):
    labelmap = tmp_path / "labelmap.prototxt"
    labelmap.write_text('item { name: "none_of_the_above" label: 0 display_name: "background" }\n'
                        'item { name: "face" label: 1 display_name: "face" }\n')
    model = tmp_path / "face.onnx"
    result = run_cli("export-onnx", face_prototxt, face_caffemodel, "-o", model, "--labels", labelmap,
                     "--mean", "0,0,0", "--scale", "1")
    assert result.returncode == 0, result.stderr
    result = run_cli("detect", "--onnx", model, face_photos[1], "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "1 detection(s)" in result.stdout and "face" in result.stdout
    detector = Detector(onnx_path=model)
    assert detector.labels == {0: "background", 1: "face"}
    assert (detector.preprocessing.width, detector.preprocessing.height) == (320, 240)


def test_padding_rows_are_not_detections(detector):
    zero_threshold = Detector(onnx_path=detector.onnx_path, threshold=0.0)
    padding = np.array([[0, 0, 0, 0, 0, 0, 0], [-1, -1, -1, -1, -1, -1, -1]], dtype=np.float32)
    assert zero_threshold.to_detections(padding, 640, 480) == []
    real = np.array([[0, 1, 0.25, 0.1, 0.2, 0.5, 0.6]], dtype=np.float32)
    (det,) = zero_threshold.to_detections(real, 640, 480)
    assert det.name == "face" and np.allclose(det.box, (64, 96, 320, 288))
