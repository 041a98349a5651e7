"""`caffessd gen-model` on the command line: files written, options honoured,
bad options refused with one line and nothing written."""
import re
import subprocess
import sys

import pytest

from caffessd import caffe_pb2
from caffessd.cli import main
from caffessd.protoio import read_prototxt
from conftest import MNV2_REF, ROOT, prior_layout

# More than 7 significant decimals is float32 noise (0.10000000149, 104.99999).
FLOAT_NOISE = re.compile(r"\d\.\d*(?:0000\d|9999\d)")


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gen-model", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def conv_outputs(net, name):
    return next(layer.convolution_param.num_output for layer in net.layer if layer.name == name)


def test_writes_all_stages_and_solvers(tmp_path, capsys):
    code, out, err = run_cli(["--input", "320x240", "--backbone", "mnv2", "--head", "ssdlite", "--classes", "2",
                              "--min-scale", "0.15", "--max-scale", "0.9", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["deploy.prototxt", "solver_test.prototxt", "solver_train.prototxt", "test.prototxt",
                     "train.prototxt"]
    assert out.split() == [str(tmp_path / n) for n in ("train.prototxt", "test.prototxt", "deploy.prototxt",
                                                       "solver_train.prototxt", "solver_test.prototxt")]
    for name in names:
        text = (tmp_path / name).read_text()
        assert not FLOAT_NOISE.search(text), f"{name}: {FLOAT_NOISE.search(text).group()}"
    deploy = read_prototxt(tmp_path / "deploy.prototxt")
    assert list(deploy.input_shape[0].dim) == [1, 3, 240, 320]
    assert conv_outputs(deploy, "conv_13/expand_mbox_conf") == 3 * 2
    solver = read_prototxt(tmp_path / "solver_train.prototxt", caffe_pb2.SolverParameter)
    assert solver.train_net == str(tmp_path / "train.prototxt")
    train = read_prototxt(tmp_path / "train.prototxt")
    resize = train.layer[0].transform_param.resize_param
    assert (resize.height, resize.width) == (240, 320)
    priorbox = next(layer for layer in deploy.layer if layer.name == "Conv_1_mbox_priorbox")
    # 0.15 + 0.75 / 5 = 0.3 of the shorter side (240): 72 px, up to 0.45 * 240 = 108 px
    assert list(priorbox.prior_box_param.min_size) == [72.0] and list(priorbox.prior_box_param.max_size) == [108.0]


def test_labelmap_sets_classes_and_data_layers(tmp_path, capsys):
    labelmap = MNV2_REF / "coco" / "labelmap_coco.prototxt"
    code, _, err = run_cli(["--labelmap", str(labelmap), "--lmdb-train", "coco/train", "--batch-size", "16",
                            "--iter-size", "2", "--lr", "0.001", "--max-iter", "60000", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    train = read_prototxt(tmp_path / "train.prototxt")
    data = train.layer[0]
    assert data.annotated_data_param.label_map_file == str(labelmap)
    assert data.data_param.source == "coco/train" and data.data_param.batch_size == 16
    assert conv_outputs(train, "conv11_mbox_conf") == 3 * 91
    assert train.layer[-1].multibox_loss_param.num_classes == 91
    test = read_prototxt(tmp_path / "test.prototxt")
    assert test.layer[0].annotated_data_param.label_map_file == str(labelmap)
    solver = read_prototxt(tmp_path / "solver_train.prototxt", caffe_pb2.SolverParameter)
    assert (solver.iter_size, solver.max_iter, list(solver.stepvalue)) == (2, 60000, [10000, 20000])
    assert solver.base_lr == pytest.approx(0.001, rel=1e-6)


def test_single_stage(tmp_path, capsys):
    code, _, err = run_cli(["--stage", "deploy", "--input", "512", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["deploy.prototxt"]


def detection_output(path):
    layer = next(layer for layer in read_prototxt(path).layer if layer.type == "DetectionOutput")
    p = layer.detection_output_param
    return (round(p.nms_param.nms_threshold, 6), p.nms_param.top_k, p.keep_top_k, round(p.confidence_threshold, 6))


def test_detection_output_options_reach_test_and_deploy_nets(tmp_path, capsys):
    # Defaults: what the published nets use (deploy 100/100 at 0.45; test 400/200 at 0.01 for mAP).
    code, _, err = run_cli(["--stage", "all", "-o", str(tmp_path / "default")], capsys)
    assert code == 0, err
    assert detection_output(tmp_path / "default" / "deploy.prototxt") == (0.45, 100, 100, 0.25)
    assert detection_output(tmp_path / "default" / "test.prototxt") == (0.45, 400, 200, 0.01)
    # The published 91-class MobileNetV2 deploy settings.
    code, _, err = run_cli(["--backbone", "mnv2", "--classes", "91", "--nms-threshold", "0.6",
                            "--conf-threshold", "0.3", "-o", str(tmp_path / "coco")], capsys)
    assert code == 0, err
    assert detection_output(tmp_path / "coco" / "deploy.prototxt") == (0.6, 100, 100, 0.3)
    assert detection_output(tmp_path / "coco" / "test.prototxt") == (0.6, 400, 200, 0.01)
    code, _, err = run_cli(["--top-k", "300", "--keep-top-k", "-1", "-o", str(tmp_path / "counts")], capsys)
    assert code == 0, err
    assert detection_output(tmp_path / "counts" / "deploy.prototxt") == (0.45, 300, -1, 0.25)
    assert detection_output(tmp_path / "counts" / "test.prototxt") == (0.45, 300, -1, 0.01)


def test_max_sizes_alone_replace_the_scales_max_sizes(tmp_path, capsys):
    """--max-sizes without --min-sizes keeps the scales' min sizes (0.2-0.95 of 160: 32, 56, ...,
    152) and gives each head the max size asked for, the first one too ('-' for none)."""
    code, _, err = run_cli(["--backbone", "mnv2", "--head", "ssdlite", "--input", "160", "--stage", "deploy",
                            "--max-sizes", "56,80,104,-,152,160", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    priors, _ = prior_layout(read_prototxt(tmp_path / "deploy.prototxt", caffe_pb2.NetParameter))
    assert [(mins, maxes) for mins, maxes, _ in priors] == [
        ([32.0], [56.0]), ([56.0], [80.0]), ([80.0], [104.0]), ([104.0], []), ([128.0], [152.0]),
        ([152.0], [160.0])]


def _garbage_labelmap(tmp_path):
    path = tmp_path / "bad_labelmap.prototxt"
    path.write_text("item { name: 'x' label: one }\n")
    return path


BAD = [
    (["--width", "0"], "--width must be between 0.25 and 1.4, got 0"),
    (["--input", "0x300"], "--input must be N or WIDTHxHEIGHT with positive integers"),
    (["--min-depth", "0"], "--min-depth must be an integer from 1 to 1024, got 0"),
    (["--extra-layers", "wide"], "--extra-layers must be one of depthwise, plain, got 'wide'"),
    (["--input", "300x"], "--input must be N or WIDTHxHEIGHT"),
    (["--feature-layers", "conv11,conv99"], "feature layer 'conv99' does not exist in the mnv1 net"),
    (["--backbone", "mnv2", "--feature-layers", "conv11"], "feature layer 'conv11' does not exist in the mnv2 net"),
    (["--feature-layers", "conv13,conv11"], "--feature-layers must be listed from shallow to deep: conv11,conv13"),
    (["--labelmap", "{garbage}"], "bad_labelmap.prototxt:1: not a valid LabelMap prototxt"),
    (["--labelmap", "{missing}"], "no_such_labelmap.prototxt: no such file"),
    (["--backbone", "resnet"], "--backbone must be one of mnv1, mnv2, got 'resnet'"),
    (["--classes", "1"], "--classes must be at least 2"),
    (["--min-sizes", "30,60"], "--min-sizes has 2 values for 6 feature layers"),
    (["--max-sizes", "60,-"], "--max-sizes has 2 values for 6 feature layers"),
    (["--stage", "eval"], "--stage must be one of train, test, deploy or all, got 'eval'"),
    (["--nms-threshold", "0"], "--nms-threshold must be in (0, 1], got 0"),
    (["--top-k", "0"], "--top-k must be at least 1 (or -1 for all), got 0"),
    (["--keep-top-k", "-2"], "--keep-top-k must be at least 1 (or -1 for all), got -2"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options_fail_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    substitutions = {"{garbage}": str(_garbage_labelmap(tmp_path)), "{missing}": str(tmp_path / "no_such_labelmap.prototxt")}
    args = [substitutions.get(a, a) for a in args]
    out_dir = tmp_path / "out"
    code, out, err = run_cli([*args, "-o", str(out_dir), "--init-weights", str(out_dir / "w.caffemodel")], capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("caffessd: error: "), err
    assert message in err
    assert "Traceback" not in err + out
    assert not out_dir.exists()


def test_real_entry_point_reports_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "caffessd", "gen-model", "--width", "0", "-o", str(tmp_path / "o")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr == "caffessd: error: --width must be between 0.25 and 1.4, got 0\n"
    assert not (tmp_path / "o").exists()
