"""`caffessd eval` as a user runs it: the embedded face detector on the
bundled face photos in WIDER FACE and VOC layout (AP 1.0 at IoU 0.5), a
merge-bn'ed MobileNet-SSD against its original (equal mAP), the Python API on
ImageRecords, and bad input (one line, exit 1, no report written)."""
import json

import numpy as np
import pytest
from PIL import Image

from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.errors import CaffessdError
from eval_builders import FACE_BOXES, face_photos, make_face_voc, make_face_wider


def test_face_detector_wider_layout_ap_1(run_cli, tmp_path):
    root = make_face_wider(tmp_path / "wider")
    out = tmp_path / "report"
    result = run_cli("eval", "--dataset", root, "--format", "wider", "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["summary"] == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    assert report["results"][0]["images"] == len(face_photos())
    assert "easy" in result.stdout and "images/s" in result.stdout and "evaluating:" in result.stderr
    # The toolbox's submission layout: event/name.txt, name, count, x y w h score lines.
    photo = face_photos()[0]
    lines = (out / "yufacedetectnet" / "wider_results" / "0--Parade" / f"{photo.stem}.txt").read_text().splitlines()
    assert lines[0] == photo.stem and int(lines[1]) == len(lines) - 2 >= 1
    x, y, w, h, score = map(float, lines[2].split())
    assert score > 0.9 and abs(x - FACE_BOXES[photo.stem][0]) < 20
    assert (out / "pr_hard.png").read_bytes()[:4] == b"\x89PNG"


def test_face_detector_voc_layout_ap_1(run_cli, tmp_path):
    root = make_face_voc(tmp_path / "voc")
    out = tmp_path / "report"
    for metric in ("voc07", "voc12", "integral"):
        result = run_cli("eval", "--dataset", root, "--format", "voc", "--split", "test", "--metric", metric,
                         "--out", out)
        assert result.returncode == 0, result.stderr
        summary = json.loads((out / "report.json").read_text())["results"][0]
        assert summary["summary"]["mAP"] == 1.0 and summary["per_class"]["face"]["ground_truth"] == len(face_photos())
    assert (out / "pr_face.png").exists()


def test_python_api_on_image_records(tmp_path):
    from caffessd import evaluate

    photo = face_photos()[0]
    good = ImageRecord(photo.name, photo, 640, 480, (BoxObject("face", FACE_BOXES[photo.stem]),))
    # A wrong box: the face is found but misplaced by more than IoU 0.5 -> AP 0 with the fork's 11 points.
    x0, y0, x1, y1 = FACE_BOXES[photo.stem]
    shifted = ImageRecord(photo.name, photo, 640, 480, (BoxObject("face", (x0 + 150, y0, x1 + 150, y1)),))
    assert evaluate(None, [good], "voc07", progress=False).summary["mAP"] == 1.0
    assert evaluate(None, [shifted], "voc07", progress=False).summary["mAP"] == 0.0
    coco = evaluate(None, [good], "coco", progress=False)
    assert coco.summary["AP50"] == pytest.approx(1.0) and 0.3 < coco.summary["AP"] <= 1.0


# ------------------------------------------------------------------ merge-bn'ed vs original MobileNet-SSD

def test_merged_and_original_mobilenet_ssd_give_equal_map(run_cli, tmp_path):
    """gen-model's MobileNet-SSD (300x300, 3 classes) with --init-weights, its
    BatchNorm statistics made random (so folding them changes every conv), then
    merge-bn. Ground truth on generated images mixes boxes the original model
    finds (so AP is not 0) with random ones (so it is not 1)."""
    from caffessd.net import Net
    from caffessd.protoio import caffemodel_from, write_caffemodel
    from caffessd.inference.detector import Detector

    gen = tmp_path / "gen"
    result = run_cli("gen-model", "--classes", "3", "--stage", "deploy", "--conf-threshold", "0.01",
                     "--init-weights", tmp_path / "init.caffemodel", "-o", gen)
    assert result.returncode == 0, result.stderr
    deploy = next(gen.glob("*deploy*.prototxt"))
    net = Net.load(deploy, tmp_path / "init.caffemodel")
    rng = np.random.default_rng(3)
    for layer in net.param.layer:
        if layer.type == "BatchNorm":
            channels = net.weights[layer.name][0].shape[0]
            factor = rng.uniform(0.5, 3.0)
            net.weights[layer.name] = [(rng.normal(0, 0.3, channels) * factor).astype(np.float32),
                                       (rng.uniform(0.5, 2.0, channels) * factor).astype(np.float32),
                                       np.array([factor], np.float32)]
    weights = tmp_path / "original.caffemodel"
    write_caffemodel(caffemodel_from(net.param, net.weights), weights)
    result = run_cli("merge-bn", "--model", deploy, "--weights", weights, "-o", tmp_path / "merged")
    assert result.returncode == 0, result.stderr

    images = tmp_path / "images"
    images.mkdir()
    original = Detector(deploy, weights, threshold=0.01, cache=tmp_path / "cache")
    lines = []
    for k in range(6):
        pixels = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
        path = images / f"g{k}.png"
        Image.fromarray(pixels).resize((320, 240), Image.BILINEAR).save(path)
        found = sorted(original(path), key=lambda d: -d.score)[:2]
        objects = [(d.label, d.box) for d in found]
        x, y = rng.uniform(0, 200, 2)
        objects.append((int(rng.integers(1, 3)), (x, y, x + 80, y + 60)))
        (images / f"g{k}.xml").write_text(_voc_xml(objects))
        lines.append(f"images/g{k}.png images/g{k}.xml")
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "labelmap.prototxt").write_text("".join(
        f'item {{ name: "{n}" label: {i} display_name: "{n}" }}\n' for i, n in enumerate(["background", "c1", "c2"])))
    out = tmp_path / "report"
    result = run_cli("eval", "--model", deploy, "--weights", weights, "--model", tmp_path / "merged.prototxt",
                     "--weights", tmp_path / "merged.caffemodel", "--dataset", tmp_path / "test.txt", "--format",
                     "list", "--labelmap", tmp_path / "labelmap.prototxt", "--metric", "voc12", "--out", out)
    assert result.returncode == 0, result.stderr
    first, second = json.loads((out / "report.json").read_text())["results"]
    assert first["model"] == "original" and second["model"] == "merged"
    assert 0.05 < first["summary"]["mAP"] < 0.95
    # Merged scores differ from the original's by float rounding only (merge-bn verifies 1e-4 relative).
    assert second["summary"]["mAP"] == pytest.approx(first["summary"]["mAP"], abs=1e-6)
    for name, values in first["per_class"].items():
        assert second["per_class"][name]["AP"] == pytest.approx(values["AP"], abs=1e-6)


def _voc_xml(objects):
    parts = ["<annotation><size><width>320</width><height>240</height><depth>3</depth></size>"]
    for label, (x0, y0, x1, y1) in objects:
        parts.append(f"<object><name>c{label}</name><difficult>0</difficult><bndbox><xmin>{x0:.1f}</xmin>"
                     f"<ymin>{y0:.1f}</ymin><xmax>{x1:.1f}</xmax><ymax>{y1:.1f}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


# ------------------------------------------------------------------ bad input: one line, exit 1, nothing written

def _one_line_error(result, *fragments):
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("evaluating")]
    assert len(lines) == 1 and lines[0].startswith("caffessd: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture()
def face_voc(tmp_path):
    return make_face_voc(tmp_path / "voc")


def test_bad_ground_truth_class(run_cli, face_voc, tmp_path):
    xml = next((face_voc / "VOC2007" / "Annotations").glob("*.xml"))
    xml.write_text(xml.read_text().replace("<name>face</name>", "<name>horse</name>"))
    result = run_cli("eval", "--dataset", face_voc, "--format", "voc", "--split", "test", "--out", tmp_path / "r")
    _one_line_error(result, "horse")
    assert not (tmp_path / "r").exists()


def test_missing_image(run_cli, face_voc, tmp_path):
    next((face_voc / "VOC2007" / "JPEGImages").glob("*.jpg")).unlink()
    result = run_cli("eval", "--dataset", face_voc, "--format", "voc", "--split", "test", "--out", tmp_path / "r")
    _one_line_error(result, ".jpg")
    assert not (tmp_path / "r").exists()


def test_wrong_kind_of_mat(run_cli, tmp_path):
    root = make_face_wider(tmp_path / "wider")
    from scipy.io import savemat
    savemat(root / "eval_tools" / "ground_truth" / "wider_medium_val.mat", {"pr_cruve": np.zeros((2, 2))})
    result = run_cli("eval", "--dataset", root, "--format", "wider", "--out", tmp_path / "r")
    _one_line_error(result, "wider_medium_val.mat", "no 'gt_list'")
    assert not (tmp_path / "r").exists()


def test_empty_dataset(run_cli, face_voc, tmp_path):
    (face_voc / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("")
    result = run_cli("eval", "--dataset", face_voc, "--format", "voc", "--split", "test", "--out", tmp_path / "r")
    _one_line_error(result, "no images")
    assert not (tmp_path / "r").exists()


def test_model_classes_do_not_match_labelmap(run_cli, face_voc, tmp_path):
    labelmap = tmp_path / "labelmap.prototxt"
    labelmap.write_text('item { name: "background" label: 0 } item { name: "face" label: 1 } '
                        'item { name: "cat" label: 2 }\n')
    result = run_cli("eval", "--dataset", face_voc, "--format", "voc", "--split", "test", "--labelmap", labelmap,
                     "--out", tmp_path / "r")
    _one_line_error(result, "2 classes", "names 3")
    assert not (tmp_path / "r").exists()


def test_existing_report_is_kept_on_failure(run_cli, face_voc, tmp_path):
    out = tmp_path / "r"
    assert run_cli("eval", "--dataset", face_voc, "--format", "voc", "--split", "test", "--out", out).returncode == 0
    before = (out / "report.json").read_text()
    next((face_voc / "VOC2007" / "JPEGImages").glob("*.jpg")).unlink()
    _one_line_error(run_cli("eval", "--dataset", face_voc, "--format", "voc", "--split", "test", "--out", out))
    assert (out / "report.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "voc"]   # no temporary folder left behind


def test_detection_of_unknown_class_is_an_error():
    from caffessd.eval.voc import VocAccumulator
    with pytest.raises(CaffessdError, match="a detection has class 'dog'"):
        VocAccumulator(["face"]).add_image([("dog", 0.5, (0, 0, 1, 1))], [])
