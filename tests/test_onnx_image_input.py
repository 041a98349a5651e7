"""`export-onnx --image-input`: a model taking a uint8 HxWx3 image of any size,
resizing and normalising inside the graph, boxes out in the image's pixels.

Checked in onnxruntime against detect's blob path (caffessd.inference.detector.Detector,
whose resize equals cv2.resize) on both face photos, an odd-sized crop and an
upscaled copy.
- --image-resize opencv (default): OpenCV's fixed-point resize in the graph;
  resized pixels equal cv2.resize's, detections equal detect's (scores 1e-6,
  boxes 1e-3 px: float noise only).
- --image-resize onnx: ONNX Resize is floating point where OpenCV's is 11-bit
  fixed point, so a resized pixel may differ by 1 level (none at the photos'
  exact 2x shrink; about an eighth of the pixels of random-noise images at
  other scales). Measured against detect: identical on the photos, scores
  within 7e-5 and boxes within 0.27 px on the crop, within 2.6e-4 and 0.62 px
  on the 1000x700 upscale, so the issue's 0.5 px holds for the photos and the
  crop only.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from caffessd.cli import main
from caffessd.image.preprocess import load_image
from caffessd.inference.detector import Detector

cv2 = pytest.importorskip("cv2")

THRESHOLD = 0.5


def export(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(["export-onnx", *map(str, args)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    return captured


def session(model):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def face_models(tmp_path_factory, face_prototxt, face_caffemodel):
    folder = tmp_path_factory.mktemp("image_input")
    paths = {}
    for key, options in {"bgr": [], "rgb": ["--image-order", "rgb"], "onnx": ["--image-resize", "onnx"]}.items():
        paths[key] = folder / f"face_{key}.onnx"
        with pytest.raises(SystemExit) as exit_info:
            main(["export-onnx", str(face_prototxt), str(face_caffemodel), "-o", str(paths[key]), "--image-input",
                  *options])
        assert exit_info.value.code == 0
    return paths


@pytest.fixture(scope="module")
def blob_detector(tmp_path_factory):
    return Detector(cache=tmp_path_factory.mktemp("cache"), threshold=THRESHOLD)


def image_detections(model_path, image):
    boxes, scores, labels = session(model_path).run(None, {"image": image})
    keep = scores >= THRESHOLD
    return boxes[keep], scores[keep], labels[keep]


def assert_same_detections(ours, theirs, score_tolerance=1e-3, box_tolerance=0.5):
    boxes, scores, labels = ours
    assert len(scores) == len(theirs) > 0
    for box, score, label, det in zip(boxes, scores, labels, theirs):
        assert label == det.label
        assert abs(score - det.score) <= score_tolerance, (score, det.score)
        assert np.abs(box - np.array(det.box)).max() <= box_tolerance, (box, det.box)


def sample_images(photo):
    """The photo (640x480: an exact 2x shrink), an odd-sized crop and an upscaled copy."""
    return {"photo": photo, "crop517x333": np.ascontiguousarray(photo[60:393, 40:557]),
            "up1000x700": cv2.resize(photo, (1000, 700), interpolation=cv2.INTER_LINEAR)}


def test_model_signature(face_models):
    model = onnx.load(str(face_models["bgr"]))
    (image,) = model.graph.input
    assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["height", "width", 3]
    assert [o.name for o in model.graph.output] == ["boxes", "scores", "labels"]


def test_equals_the_blob_path_at_any_size(face_models, blob_detector, face_photos):
    for photo in face_photos:
        for name, image in sample_images(load_image(photo)).items():
            theirs = blob_detector(image)
            assert_same_detections(image_detections(face_models["bgr"], image), theirs, 1e-6, 1e-3)
            # The RGB model on the RGB image gives the same result.
            rgb = np.ascontiguousarray(image[:, :, ::-1])
            assert_same_detections(image_detections(face_models["rgb"], rgb), theirs, 1e-6, 1e-3)
            if name != "up1000x700":   # ONNX Resize: see the module docstring
                assert_same_detections(image_detections(face_models["onnx"], image), theirs)


def with_output(model, name):
    """The model with an inner tensor exposed as an extra output."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy


SIZES = [(480, 640), (333, 517), (120, 90), (241, 319), (960, 1280), (1, 1), (3, 900), (700, 1000)]


@pytest.mark.parametrize("resize", ["opencv", "onnx"])
def test_resize_in_the_graph_against_cv2(face_models, resize):
    model = session(with_output(onnx.load(str(face_models["bgr" if resize == "opencv" else "onnx"])),
                                "image_input/levels"))
    rng = np.random.default_rng(15)
    for height, width in SIZES:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        ours = model.run(["image_input/levels"], {"image": image})[0][0].transpose(1, 2, 0)
        theirs = cv2.resize(image, (320, 240), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        difference = np.abs(ours - theirs).max()
        if resize == "opencv" or (height, width) == (480, 640):   # ONNX Resize is exact at 2x only
            assert difference == 0, (height, width)
        else:
            assert difference <= 1.0, (height, width)


def test_no_detection_gives_empty_outputs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["gen-model", "--stage", "deploy", "--input", "96", "--classes", "2", "--conf-threshold", "0.999",
              "-o", str(tmp_path), "--init-weights", str(tmp_path / "w.caffemodel")])
    capsys.readouterr()
    captured = export(capsys, tmp_path / "deploy.prototxt", tmp_path / "w.caffemodel", "-o", tmp_path / "m.onnx",
                      "--image-input")
    assert "does not say how images are prepared" not in captured.err   # gen-model's note supplies them
    boxes, scores, labels = session(tmp_path / "m.onnx").run(None, {"image": np.zeros((50, 70, 3), np.uint8)})
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


def test_image_input_refuses_raw(face_prototxt, face_caffemodel, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export-onnx", str(face_prototxt), str(face_caffemodel), "-o", str(tmp_path / "m.onnx"),
              "--image-input", "--raw"])
    assert exit_info.value.code == 2 and "not --raw" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_detect_explains_an_image_input_model(face_models, face_photos, run_cli, tmp_path):
    result = run_cli("detect", "--onnx", face_models["bgr"], face_photos[0], "--out", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "exported with --image-input" in result.stderr and result.stderr.count("\n") == 1
