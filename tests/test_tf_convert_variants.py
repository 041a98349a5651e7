"""convert-tf variants: a retrained 2-class 640x640 SSDLite with its pipeline.config,
COCO-to-VOC class selection, ExponentialMovingAverage values, a frozen graph,
folded BatchNorm, and --plain-caffe's reported deviation.

References are TF's own forward passes of TF1 graphs with the checkpoints'
variable names (see tf_ssd_reference); the converted nets run in caffessd's
ONNX path. Tolerance 1e-4 absolute (TOL).
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

# TensorFlow is imported lazily (by the fixtures), never at collection time.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                reason="needs TensorFlow: pip install 'caffessd[tf]'")

import tf_ssd_reference as R  # noqa: E402
from tf_convert_checks import TOL, compare, run_onnx  # noqa: E402

from caffessd import protoio  # noqa: E402
from caffessd.cli import main as cli_main  # noqa: E402
from caffessd.tfconvert.classes import VOC_FROM_COCO  # noqa: E402
from caffessd.tfconvert.convert import convert_tf  # noqa: E402
from caffessd.tfconvert.pipeline import read_pipeline  # noqa: E402


def _bgr(rgb):
    return np.ascontiguousarray(rgb[..., ::-1].transpose(0, 3, 1, 2))


def _sizes(model):
    maps = sorted((k, v) for k, v in model.features.items() if k.startswith("feature_"))
    return [(int(v.shape[1]), int(v.shape[2])) for _, v in maps]


def _check(result, model, tf_out, rgb):
    diff = compare(result, tf_out, run_onnx(result, _bgr(rgb)), _sizes(model),
                   len(result.class_slots))
    assert diff["loc"] < TOL and diff["conf"] < TOL and diff["decoded"] < TOL, diff
    assert diff["priors"] < 1e-6, diff
    return diff


class Trained:
    def __init__(self, arch, num_classes, size, mult, seed):
        self.model = R.build(arch, num_classes=num_classes, height=size, width=size, mult=mult,
                             seed=seed)
        self.rgb = np.random.default_rng(seed).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
        self.tf_out = R.run(self.model, self.rgb)


@pytest.fixture(scope="module")
def lite640(tmp_path_factory):
    # A retrained ssdlite_mobilenet_v2: 2 classes, 640x640 input, width 0.75.
    root = tmp_path_factory.mktemp("lite640")
    t = Trained("ssdlite_mobilenet_v2", 2, 640, 0.75, seed=3)
    R.save_checkpoint(t.model, root / "train" / "model.ckpt")
    (root / "pipeline.config").write_text(R.pipeline_text("ssdlite_mobilenet_v2", 2, 640, 640, 0.75))
    t.root = root
    return t


@pytest.fixture(scope="module")
def coco_v1(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_v1")
    t = Trained("ssd_mobilenet_v1", 90, 300, 1.0, seed=5)
    t.root = root
    t.ckpt = R.save_checkpoint(t.model, root / "train" / "model.ckpt")
    return t


def test_2_class_640_ssdlite_matches_tensorflow(lite640):
    result = convert_tf(lite640.root / "train", lite640.root / "caffe",
                        pipeline=lite640.root / "pipeline.config")
    assert (result.height, result.width) == (640, 640)
    assert result.spec.num_classes == 2 and result.spec.depth_multiplier == 0.75
    _check(result, lite640.model, lite640.tf_out, lite640.rgb)
    net = protoio.read_prototxt(result.prototxt)
    assert net.input_shape[0].dim[:] == [1, 3, 640, 640]
    out = [layer for layer in net.layer if layer.type == "DetectionOutput"][0].detection_output_param
    assert out.num_classes == 3 and abs(out.confidence_threshold - 0.3) < 1e-6
    assert abs(out.nms_param.nms_threshold - 0.6) < 1e-6


def test_pipeline_config_fields(lite640):
    cfg = read_pipeline(lite640.root / "pipeline.config")
    assert (cfg.num_classes, cfg.height, cfg.width) == (2, 640, 640)
    assert cfg.architecture == "ssdlite_mobilenet_v2" and cfg.depth_multiplier == 0.75
    assert cfg.anchors.aspect_ratios == [1.0, 2.0, 0.5, 3.0, 0.3333]
    assert cfg.box_coder_scales == (10.0, 10.0, 5.0, 5.0) and cfg.score_converter == "SIGMOID"


def test_merge_bn_folds_and_still_matches(lite640):
    result = convert_tf(lite640.root / "train", lite640.root / "merged",
                        pipeline=lite640.root / "pipeline.config", merge_bn=True)
    net = protoio.read_prototxt(result.prototxt)
    assert not [layer for layer in net.layer if layer.type in ("BatchNorm", "Scale")]
    _check(result, lite640.model, lite640.tf_out, lite640.rgb)


def test_classes_voc_keeps_and_reorders_coco_classes(coco_v1):
    result = convert_tf(coco_v1.root / "train", coco_v1.root / "voc", classes="voc")
    assert result.class_slots == [0] + [coco for _, coco in VOC_FROM_COCO]
    _check(result, coco_v1.model, coco_v1.tf_out, coco_v1.rgb)
    labelmap = protoio.read_labelmap(result.labelmap)
    assert [item.name for item in labelmap.item][:3] == ["background", "aeroplane", "bicycle"]


def test_use_ema_reads_moving_averages(coco_v1, tmp_path):
    # True values stored as .../ExponentialMovingAverage, decoys under the plain names.
    R.save_checkpoint(coco_v1.model, tmp_path / "ema" / "model.ckpt", ema_decoys=True)
    result = convert_tf(tmp_path / "ema", tmp_path / "with", use_ema=True)
    _check(result, coco_v1.model, coco_v1.tf_out, coco_v1.rgb)
    assert any(name.endswith("/ExponentialMovingAverage") for name, _ in result.variables)
    plain = convert_tf(tmp_path / "ema", tmp_path / "without")
    diff = compare(plain, coco_v1.tf_out, run_onnx(plain, _bgr(coco_v1.rgb)), _sizes(coco_v1.model), 91)
    assert diff["conf"] > 0.01  # the decoys really differ


def test_frozen_graph_converts_like_the_checkpoint(coco_v1, tmp_path):
    pb = R.freeze(coco_v1.model, tmp_path / "frozen_inference_graph.pb")
    result = convert_tf(pb, tmp_path / "frozen")
    _check(result, coco_v1.model, coco_v1.tf_out, coco_v1.rgb)


def test_plain_caffe_prints_its_deviation(coco_v1, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["convert-tf", str(coco_v1.ckpt), "-o", str(tmp_path / "plain"), "--plain-caffe"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    line = [ln for ln in text.splitlines() if ln.startswith("plain Caffe")][0]
    loc_dev = float(line.split("max |d box encoding| ")[1].split(",")[0])
    assert loc_dev > 1e-3  # ReLU and symmetric padding really change the outputs
    net = protoio.read_prototxt(tmp_path / "plain" / "deploy.prototxt")
    assert "ReLU6" not in {layer.type for layer in net.layer}
    # no pad-then-slice layers (the priors' own Slice stays)
    assert not [layer for layer in net.layer if layer.type == "Slice" and "priorbox" not in layer.name]
    # ... and the plain net really deviates from TF by more than the tolerance.
    result = convert_tf(coco_v1.ckpt, tmp_path / "plain2", plain_caffe=True)
    diff = compare(result, coco_v1.tf_out, run_onnx(result, _bgr(coco_v1.rgb)), _sizes(coco_v1.model), 91)
    assert diff["loc"] > TOL
    assert result.plain_deviation["mbox_loc"] == pytest.approx(loc_dev, rel=1e-3)  # printed with 4 digits


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["convert-tf", str(tmp_path / "missing.ckpt"), "-o", str(tmp_path / "o")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("caffessd: error:")
