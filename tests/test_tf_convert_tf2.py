"""convert-tf on the TF2 Detection Zoo layout of SSD MobileNet V2 320x320 (ssd_mobilenet_v2_keras).

The model (tf2_ssd_reference) is built from Keras 2 objects with the object
graph of the TF OD API's Keras classes, random weights and BatchNorm
statistics, and saved as a zoo folder: checkpoint/ckpt-1 (object-based keys),
saved_model/ and pipeline.config. convert-tf takes the folder, the checkpoint
prefix or the SavedModel folder. Raw outputs (box encodings, class logits,
decoded boxes) equal TF's within 1e-4 (TOL), priors TF's anchors within 1e-6.
Final detections equal TF2's post-processing (NMS on unclipped boxes, then
the survivors clipped and zero-area ones dropped, see test_tf_postprocess):
same count and classes, scores within 1e-5, boxes within 1e-4, through the
ONNX path and `caffessd detect` on an image file.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None
                                or importlib.util.find_spec("tensorflow") is None,
                                reason="needs TensorFlow and tf_keras (Keras 2): pip install 'caffessd[test]'")

import tf_ssd_reference as R  # noqa: E402
from test_tf_convert import _assert_close  # noqa: E402
from test_tf_postprocess import PER_CLASS, TOTAL, set_postprocessing, tf_postprocess  # noqa: E402
from tf_convert_checks import compare, run_onnx  # noqa: E402

from caffessd.errors import CaffessdError  # noqa: E402
from caffessd.netnotes import read_notes  # noqa: E402
from caffessd.tfconvert.convert import convert_tf  # noqa: E402

SIZE, CLASSES = 320, 3


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    import cv2
    from tf2_ssd_reference import KerasSSD

    root = tmp_path_factory.mktemp("tf2zoo")
    model = KerasSSD(num_classes=CLASSES, size=SIZE, seed=1)
    folder = model.save_zoo(root / "ssd_mobilenet_v2_320x320_coco17_tpu-8", post=set_postprocessing)
    rgb = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    image = root / "image.png"
    cv2.imwrite(str(image), np.ascontiguousarray(rgb[..., ::-1]))
    raw = model.run(((2.0 / 255.0) * rgb.astype(np.float32) - 1.0)[None])
    return {"root": root, "folder": folder, "model": model, "rgb": rgb, "image": image, "raw": raw,
            "result": convert_tf(folder, root / "caffe")}


def _raw_diff(zoo, result):
    blob = (zoo["rgb"][..., ::-1].astype(np.float32) - 127.5) / 127.5
    blob = np.ascontiguousarray(blob.transpose(2, 0, 1)[None])
    return compare(result, zoo["raw"], run_onnx(result, blob), zoo["model"].sizes, len(result.class_slots))


def test_zoo_folder_converts_with_raw_parity(zoo):
    result = zoo["result"]
    assert result.height == result.width == SIZE  # from the folder's pipeline.config
    assert result.spec.num_classes == CLASSES and result.spec.box_kernel == 1
    _assert_close(_raw_diff(zoo, result))


@pytest.mark.parametrize("which", ["checkpoint", "saved_model"])
def test_checkpoint_prefix_and_saved_model_convert_the_same(zoo, which, tmp_path):
    folder = zoo["folder"]
    source = folder / "saved_model" if which == "saved_model" else folder / "checkpoint" / "ckpt-1"
    result = convert_tf(source, tmp_path, pipeline=folder / "pipeline.config")
    assert len(result.variables) == len(zoo["result"].variables)
    _assert_close(_raw_diff(zoo, result))


def test_final_detections_equal_tf2_postprocessing(zoo, run_cli):
    tf_boxes, tf_scores, tf_classes = tf_postprocess(*zoo["raw"], tf2=True)
    assert len(tf_scores) == TOTAL and np.bincount(tf_classes).max() == PER_CLASS
    assert np.any(tf_boxes == 0.0) or np.any(tf_boxes == 1.0)  # survivors clipped at the image edge
    result = zoo["result"]
    assert read_notes(result.prototxt)["postprocessing"]["clip_after_nms"] is True
    from caffessd.onnxconv import convert
    from caffessd.inference.session import run_onnx as run

    blob = np.ascontiguousarray(((zoo["rgb"][..., ::-1].astype(np.float32) - 127.5) / 127.5)
                                .transpose(2, 0, 1)[None])
    rows = next(iter(run(convert(str(result.prototxt), str(result.caffemodel)),
                         {"data": blob}).values())).reshape(-1, 7)
    out = run_cli("detect", zoo["image"], "--model", result.prototxt, "--weights", result.caffemodel,
                  "--mean", "127.5", "--scale", repr(1 / 127.5), "--threshold", "0",
                  "--out", zoo["root"] / "det", "--cache-dir", zoo["root"] / "cache")
    assert out.returncode == 0, out.stderr
    found = json.loads((zoo["root"] / "det" / "detections.json").read_text())[0]["detections"]
    for boxes, scores, labels in ((rows[:, 3:7], rows[:, 2], rows[:, 1].astype(int)),
                                  ([d["box_normalized"] for d in found], [d["score"] for d in found],
                                   [d["label"] for d in found])):
        assert len(scores) == len(tf_scores)
        np.testing.assert_array_equal(labels, tf_classes + 1)
        np.testing.assert_allclose(scores, tf_scores, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(boxes)[:, [1, 0, 3, 2]], tf_boxes, rtol=0, atol=1e-4)


def test_fpnlite_is_refused_by_name(tmp_path):
    import tensorflow as tf

    predictor = tf.Module()
    predictor._base_tower_layers_for_heads = {"box_encodings": [tf.Variable(tf.zeros([3, 3, 8, 8]))]}
    model = tf.Module()
    model._box_predictor = predictor
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "checkpoint" / "ckpt"))
    with pytest.raises(CaffessdError, match="weight-shared box predictor .*FPNLite.* is not supported"):
        convert_tf(prefix, tmp_path / "out")
    config = tmp_path / "pipeline.config"
    config.write_text(R.pipeline_text("ssd_mobilenet_v2", 3, 320, 320).replace(
        "type: 'ssd_mobilenet_v2'", "type: 'ssd_mobilenet_v2_fpn_keras'"))
    from caffessd.tfconvert.detect import detect_architecture
    from caffessd.tfconvert.pipeline import read_pipeline

    with pytest.raises(CaffessdError, match="ssd_mobilenet_v2_fpn_keras .FPN / FPNLite., which is not supported"):
        detect_architecture(_V2Store(), read_pipeline(config))


class _V2Store:
    """Just enough of a VariableStore for detect_architecture to see a MobileNetV2."""

    source = "test"

    def __contains__(self, name):
        return name == "FeatureExtractor/MobilenetV2/Conv/weights"

    def names(self):
        return iter(["FeatureExtractor/MobilenetV2/Conv/weights"])
