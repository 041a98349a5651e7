"""End to end: `caffessd detect` on image files gives what OpenCV's own full
pipeline gives with the same model: cv2.imread, cv2.dnn.blobFromImage (its
cv::resize INTER_LINEAR) and cv2.dnn.readNetFromCaffe. Same detections, scores
within 1e-3, boxes within 0.5 px, on both face photos, an odd-sized crop (a
non-2x resize) and a photo stored turned, with an EXIF orientation.
"""
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from caffessd.inference.detector import default_model

THRESHOLD = 0.5


def opencv_pipeline(path):
    """Detections as an OpenCV user gets them: (label, score, box in pixels)."""
    spec = default_model()
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    blob = cv2.dnn.blobFromImage(image, scalefactor=1.0, size=(320, 240), mean=(0, 0, 0), swapRB=False, crop=False)
    net = cv2.dnn.readNetFromCaffe(str(spec.prototxt), str(spec.caffemodel))
    net.setInput(blob)
    rows = net.forward().reshape(-1, 7)
    height, width = image.shape[:2]
    found = []
    for _, label, score, *box in rows:
        if score >= THRESHOLD:
            x0, y0, x1, y1 = np.clip(box, 0, 1) * [width, height, width, height]
            found.append((int(label), float(score), [x0, y0, x1, y1]))
    return found


@pytest.fixture(scope="module")
def photos(tmp_path_factory, face_photos):
    folder = tmp_path_factory.mktemp("photos")
    crop = Image.open(face_photos[0]).crop((40, 60, 557, 393))       # 517x333
    crop.save(folder / "crop517x333.png")
    turned = Image.open(face_photos[1]).transpose(Image.Transpose.ROTATE_270)   # stored 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 8                                                  # displayed turned back
    turned.save(folder / "turned.png", exif=exif)
    return [*face_photos, folder / "crop517x333.png", folder / "turned.png"]


def test_detect_equals_opencvs_full_pipeline(photos, run_cli, tmp_path):
    result = run_cli("detect", *photos, "--threshold", THRESHOLD, "--out", tmp_path / "out",
                     "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    ours = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [r["file"] for r in ours] == [str(p) for p in photos]
    for entry, photo in zip(ours, photos):
        theirs = opencv_pipeline(photo)
        assert (entry["height"], entry["width"]) == cv2.imread(str(photo)).shape[:2]
        assert len(entry["detections"]) == len(theirs) > 0, photo.name
        for det, (label, score, box) in zip(entry["detections"], theirs):
            assert det["label"] == label
            assert abs(det["score"] - score) <= 1e-3, (photo.name, det["score"], score)
            assert np.abs(np.array(det["box"]) - box).max() <= 0.5, (photo.name, det["box"], box)
