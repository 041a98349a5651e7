"""Final detections of a converted TF model equal TensorFlow's post-processing.

The reference is the TF1 Object Detection API's post-processing written with
TF ops as object_detection/core/post_processing.py (multiclass_non_max_suppression)
and box_list_ops.clip_to_window apply it: sigmoid scores without the background
slot; per class, scores above score_threshold, boxes decoded by the
FasterRcnnBoxCoder, clipped to the image window [0, 0, 1, 1] with zero-area
boxes dropped, then tf.image.non_max_suppression keeping up to
max_detections_per_class; all classes sorted by score, max_total_detections kept.

caffessd runs the converted net through its ONNX DetectionOutput (which reads
the deploy prototxt's caffessd post-processing note) and through `caffessd
detect` on an image file. Same count and classes; scores within 1e-5, boxes
within 1e-4 (normalised coordinates). The model is small (MobileNet v1 at 0.25,
128x128, 3 classes) with max_detections_per_class 4 and max_total_detections 10,
so a class has more NMS survivors than its cap, the total cap binds, and boxes
touch the image edge.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                reason="needs TensorFlow: pip install 'caffessd[tf]'")

import tf_ssd_reference as R  # noqa: E402

from caffessd.netnotes import read_notes  # noqa: E402
from caffessd.tfconvert.convert import convert_tf  # noqa: E402

SIZE, CLASSES = 128, 3
SCORE_THRESHOLD, IOU, PER_CLASS, TOTAL = 0.3, 0.6, 4, 10
SCORE_TOL, BOX_TOL = 1e-5, 1e-4


def tf_postprocess(box_encodings, logits, anchors, per_class=PER_CLASS, total=TOTAL, tf2=False):
    """TF1 OD API post-processing (see the module docstring) -> boxes (y, x, y, x), scores, classes.

    tf2: the TF2 OD API's order instead (post_processing.py, _clip_window_prune_boxes):
    NMS on the unclipped boxes, then the sorted survivors clipped and zero-area ones dropped."""
    tf = R.tf
    encodings = tf.constant(box_encodings)
    anchors = tf.constant(anchors)
    # FasterRcnnBoxCoder.decode with scales (10, 10, 5, 5)
    ya, xa = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ty, tx = encodings[:, 0] / 10.0, encodings[:, 1] / 10.0
    th, tw = encodings[:, 2] / 5.0, encodings[:, 3] / 5.0
    w, h = tf.exp(tw) * wa, tf.exp(th) * ha
    yc, xc = ty * ha + ya, tx * wa + xa
    boxes = tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)
    scores = tf.sigmoid(tf.constant(logits))[:, 1:]
    out_boxes, out_scores, out_classes = [], [], []
    for c in range(scores.shape[1]):
        keep = tf.reshape(tf.where(scores[:, c] > SCORE_THRESHOLD), [-1])   # filter_greater_than
        b, s = tf.gather(boxes, keep), tf.gather(scores[:, c], keep)
        if not tf2:
            b, s = _clip_to_window(b, s)
        size = tf.minimum(per_class, tf.shape(b)[0])
        chosen = tf.image.non_max_suppression(b, s, size, iou_threshold=IOU)
        out_boxes.append(tf.gather(b, chosen))
        out_scores.append(tf.gather(s, chosen))
        out_classes.append(tf.fill(tf.shape(chosen), c))
    all_boxes, all_scores, all_classes = (tf.concat(x, 0) for x in (out_boxes, out_scores, out_classes))
    if tf2:
        order = tf.nn.top_k(all_scores, k=tf.shape(all_scores)[0]).indices
        all_boxes, all_scores, all_classes = (tf.gather(x, order) for x in (all_boxes, all_scores, all_classes))
        all_boxes, kept = _clip_to_window(all_boxes, tf.range(tf.shape(all_boxes)[0]))
        all_scores, all_classes = tf.gather(all_scores, kept), tf.gather(all_classes, kept)
    order = tf.nn.top_k(all_scores, k=tf.shape(all_scores)[0]).indices[:total]
    return (tf.gather(all_boxes, order).numpy(), tf.gather(all_scores, order).numpy(),
            tf.gather(all_classes, order).numpy())


def _clip_to_window(boxes, field):
    """box_list_ops.clip_to_window on [0, 0, 1, 1], dropping boxes left with zero area."""
    tf = R.tf
    boxes = tf.maximum(tf.minimum(boxes, 1.0), 0.0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    nonzero = tf.reshape(tf.where(area > 0.0), [-1])
    return tf.gather(boxes, nonzero), tf.gather(field, nonzero)


def _pipeline():
    return set_postprocessing(R.pipeline_text("ssd_mobilenet_v1", CLASSES, SIZE, SIZE, 0.25))


def set_postprocessing(text):
    """A tf_ssd_reference pipeline.config with this module's NMS settings."""
    old = ("score_threshold: 0.3\n        iou_threshold: 0.6\n        max_detections_per_class: 100\n"
           "        max_total_detections: 100")
    assert old in text
    return text.replace(old, f"score_threshold: {SCORE_THRESHOLD}\n        iou_threshold: {IOU}\n"
                             f"        max_detections_per_class: {PER_CLASS}\n"
                             f"        max_total_detections: {TOTAL}")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("tfpost")
    graph = R.build("ssd_mobilenet_v1", num_classes=CLASSES, height=SIZE, width=SIZE, mult=0.25, seed=5)
    R.save_checkpoint(graph, root / "train" / "model.ckpt")
    (root / "pipeline.config").write_text(_pipeline())
    result = convert_tf(root / "train", root / "caffe", pipeline=root / "pipeline.config")
    # An image file, fed to TF as the OD API's MobileNet preprocessing does: 2/255 x - 1.
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    image = root / "image.png"
    cv2.imwrite(str(image), np.ascontiguousarray(rgb[..., ::-1]))
    tf_in = ((2.0 / 255.0) * rgb.astype(np.float32) - 1.0)[None]
    box, logits, anchors = R.run(graph, tf_in)
    return {"root": root, "result": result, "image": image, "rgb": rgb, "raw": (box, logits, anchors),
            "tf": tf_postprocess(box, logits, anchors)}


def _assert_same(model, boxes_xy, scores, labels):
    tf_boxes, tf_scores, tf_classes = model["tf"]
    assert len(scores) == len(tf_scores) == TOTAL
    np.testing.assert_array_equal(labels, tf_classes + 1)  # Caffe label = TF class + 1 (background 0)
    np.testing.assert_allclose(scores, tf_scores, rtol=0, atol=SCORE_TOL)
    np.testing.assert_allclose(np.asarray(boxes_xy)[:, [1, 0, 3, 2]], tf_boxes, rtol=0, atol=BOX_TOL)


def test_reference_exercises_clipping_and_both_caps(model):
    tf_boxes, tf_scores, tf_classes = model["tf"]
    assert np.any(tf_boxes == 0.0) and np.any(tf_boxes == 1.0)  # boxes touching the image edge
    # Without the per-class cap some class keeps more NMS survivors than PER_CLASS...
    _, _, uncapped = tf_postprocess(*model["raw"], per_class=10_000, total=10_000)
    assert np.bincount(uncapped).max() > PER_CLASS
    # ...and with it the total cap still binds.
    _, capped, _ = tf_postprocess(*model["raw"], total=10_000)
    assert len(capped) > TOTAL
    assert np.bincount(tf_classes).max() == PER_CLASS


def test_prototxt_records_tf_postprocessing(model):
    notes = read_notes(model["result"].prototxt)
    assert notes["postprocessing"] == {"clip_before_nms": True, "clip_after_nms": False,
                                       "max_per_class": PER_CLASS, "max_total": TOTAL}


def test_onnx_final_detections_equal_tensorflow(model):
    from caffessd.onnxconv import convert
    from caffessd.inference.session import run_onnx

    result = model["result"]
    onnx_model = convert(str(result.prototxt), str(result.caffemodel))
    blob = ((model["rgb"][..., ::-1].astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    rows = next(iter(run_onnx(onnx_model, {"data": np.ascontiguousarray(blob)}).values())).reshape(-1, 7)
    _assert_same(model, rows[:, 3:7], rows[:, 2], rows[:, 1].astype(int))


def test_detect_on_an_image_file_equals_tensorflow(model, run_cli):
    result, root = model["result"], model["root"]
    out = run_cli("detect", model["image"], "--model", result.prototxt, "--weights", result.caffemodel,
                  "--mean", "127.5", "--scale", repr(1 / 127.5), "--threshold", "0",
                  "--out", root / "det", "--cache-dir", root / "cache")
    assert out.returncode == 0, out.stderr
    found = json.loads((root / "det" / "detections.json").read_text())[0]["detections"]
    _assert_same(model, [d["box_normalized"] for d in found], [d["score"] for d in found],
                 [d["label"] for d in found])


def test_without_the_note_caffe_semantics_stay(model, tmp_path):
    """The same net without the note: unclipped boxes, every survivor per class."""
    from caffessd.onnxconv import convert
    from caffessd.inference.session import run_onnx

    result = model["result"]
    text = result.prototxt.read_text()
    bare = tmp_path / "bare.prototxt"
    bare.write_text("".join(line for line in text.splitlines(keepends=True) if not line.startswith("# caffessd:")))
    rows = next(iter(run_onnx(convert(str(bare), str(result.caffemodel)),
                              {"data": np.zeros((1, 3, SIZE, SIZE), np.float32)}).values())).reshape(-1, 7)
    assert len(rows) == TOTAL  # keep_top_k still caps the total
    assert rows[:, 3:].min() < 0 or rows[:, 3:].max() > 1  # boxes are not clipped


def test_merge_bn_keeps_the_note_and_the_detections(model, tmp_path):
    from caffessd.merge_bn import merge_bn
    from caffessd.onnxconv import convert
    from caffessd.inference.session import run_onnx

    result = model["result"]
    report = merge_bn(result.prototxt, result.caffemodel, out_prefix=tmp_path / "merged", verify=False)
    assert read_notes(report.prototxt) == read_notes(result.prototxt)
    blob = ((model["rgb"][..., ::-1].astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    rows = next(iter(run_onnx(convert(str(report.prototxt), str(report.caffemodel)),
                              {"data": np.ascontiguousarray(blob)}).values())).reshape(-1, 7)
    _assert_same(model, rows[:, 3:7], rows[:, 2], rows[:, 1].astype(int))
