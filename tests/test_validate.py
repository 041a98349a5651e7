"""Caffe's LayerSetUp/Reshape checks (caffessd.validate): a net the SSD fork
of Caffe refuses is refused by every command with one line naming the layer,
the field and the rule, before any conversion or run.

Each case mutates the bundled face detector's prototxt (models/yufacedetectnet)
the way the issue's hostile runs did; the rules come from the SSD fork's
src/caffe/layers/*.cpp (CHECK/LOG(FATAL) in LayerSetUp and Reshape).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from caffessd.net import Net
from caffessd.validate import CHECKERS, LayerRuleError, check_layer
from caffessd import caffe_pb2, protoio
from conftest import run_in_process

ROOT = Path(__file__).resolve().parent.parent
FACE = ROOT / "models" / "yufacedetectnet"
PROTOTXT = FACE / "yufacedetectnet-open-v2.prototxt"
CAFFEMODEL = FACE / "yufacedetectnet-open-v2.caffemodel"
PHOTO = FACE / "keliamoniz1.jpg"
TEXT = PROTOTXT.read_text()

CONV1 = "num_output: 32\n    pad: 1\n\tstride: 2\n    kernel_size: 3"
PERMUTE = "order: 0\n    order: 2\n    order: 3\n    order: 1"
VARIANCES = "    variance: 0.10000000149\n    variance: 0.10000000149\n    variance: 0.20000000298\n    variance: 0.20000000298"
DET = "num_classes: 2\n    share_location: true\n    background_label_id: 0"


@dataclass
class Case:
    id: str
    old: str
    new: str
    layer: str   # the error line names this layer ...
    field: str   # ... this field ...
    rule: str    # ... and says this


CASES = [
    Case("permute-repeated-axis", PERMUTE, "order: 0\n    order: 2\n    order: 2\n    order: 1",
         "conv3_3_norm_mbox_loc_perm", "order", "repeated"),
    Case("permute-5d-order", PERMUTE, PERMUTE + "\n    order: 4", "conv3_3_norm_mbox_loc_perm", "order",
         "less than the input dimension"),
    Case("dilation-0", "    dilation: 1\n", "    dilation: 0\n", "conv5_1", "dilation", "positive"),
    Case("group-0", CONV1, CONV1 + "\n    group: 0", "conv1_1", "group", "positive"),
    Case("group-not-dividing", CONV1, CONV1 + "\n    group: 2", "conv1_1", "group", "do not divide the 3 input"),
    Case("stride-twice", CONV1, CONV1 + "\n    stride_h: 2 stride_w: 2", "conv1_1", "stride", "not both"),
    Case("num-output-0", "num_output: 32\n", "num_output: 0\n", "conv1_1", "num_output", "positive"),
    Case("pool-pad-over-kernel", "pool: MAX\n    kernel_size: 2\n", "pool: MAX\n    kernel_size: 2\n    pad: 2\n",
         "pool1", "pad", "smaller than the kernel"),
    Case("priorbox-3-variances", VARIANCES, VARIANCES.rsplit("\n", 1)[0], "conv3_3_norm_mbox_priorbox",
         "variance", "one or four"),
    Case("priorbox-min-size-0", "min_size: 10.0", "min_size: 0.0", "conv3_3_norm_mbox_priorbox",
         "min_size", "positive"),
    Case("priorbox-max-below-min", "min_size: 24.0\n", "min_size: 24.0\n    max_size: 20\n    max_size: 20\n"
         "    max_size: 20\n", "conv3_3_norm_mbox_priorbox", "max_size", "greater than min_size"),
    Case("background-id-too-big", DET, DET.replace("background_label_id: 0", "background_label_id: 2"),
         "detection_out", "background_label_id", "[0, num_classes=2)"),
    Case("num-classes-0", DET, DET.replace("num_classes: 2", "num_classes: 0"), "detection_out", "num_classes",
         "at least 1"),
    Case("nms-negative", "nms_threshold: 0.15", "nms_threshold: -1", "detection_out", "nms_threshold",
         "[0, 1]"),
    Case("nms-above-1", "nms_threshold: 0.15", "nms_threshold: 1.5", "detection_out", "nms_threshold", "[0, 1]"),
    Case("conf-count-mismatch", DET, DET.replace("num_classes: 2", "num_classes: 3"), "detection_out",
         "bottom 1", "confidence values do not match"),
    # A head conv with 4 fewer outputs: the loc values no longer match the priors.
    Case("loc-count-mismatch", "num_output: 12\n", "num_output: 8\n", "detection_out", "bottom 0",
         "location values do not match"),
    Case("missing-top", '  top: "conv3_3_norm_mbox_loc_perm"\n', "", "conv3_3_norm_mbox_loc_perm", "top",
         "exactly 1"),
    Case("reshape-count", "dim: 0\n      dim: -1\n      dim: 2", "dim: 0\n      dim: -1\n      dim: 7",
         "mbox_conf_reshape", "shape", "not divisible"),
]


def _mutated(tmp_path: Path, case: Case) -> Path:
    assert case.old in TEXT, case.id
    path = tmp_path / f"{case.id}.prototxt"
    path.write_text(TEXT.replace(case.old, case.new, 1))
    return path


def _assert_one_line(case: Case, code, err: str, path: Path) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"caffessd: error: {path}: layer '{case.layer}'"), line
    assert case.field in line and case.rule in line, line


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_inspect_refuses_what_caffe_refuses(case, tmp_path, capsys):
    path = _mutated(tmp_path, case)
    code, err, _ = run_in_process(["inspect", path], capsys)
    _assert_one_line(case, code, err, path)


# Every command goes through the same pass (Net.walk); one case per command.
PER_COMMAND = {
    "export-onnx": lambda p, out: ["export-onnx", p, CAFFEMODEL, "-o", out / "m.onnx"],
    "merge-bn": lambda p, out: ["merge-bn", "-m", p, "-w", CAFFEMODEL, "-o", out / "m"],
    "detect": lambda p, out: ["detect", "--model", p, "--weights", CAFFEMODEL, "--cache-dir", out / "cache",
                              "--out", out / "det", PHOTO],
}


@pytest.mark.parametrize("command", sorted(PER_COMMAND))
@pytest.mark.parametrize("case_id", ["permute-repeated-axis", "nms-negative", "conf-count-mismatch"])
def test_every_command_refuses(command, case_id, tmp_path, capsys):
    case = next(c for c in CASES if c.id == case_id)
    path = _mutated(tmp_path, case)
    out = tmp_path / "out"
    code, err, _ = run_in_process(PER_COMMAND[command](path, out), capsys)
    _assert_one_line(case, code, err, path)
    assert not [p for p in out.rglob("*") if p.is_file()] if out.exists() else True


def test_the_bundled_and_generated_nets_pass():
    """The checks refuse nothing Caffe accepts: the face detector and gen-model's nets."""
    from caffessd.generators import SSDConfig, build_net

    Net.load(PROTOTXT, CAFFEMODEL).memory_estimate()
    for backbone, head in (("mnv1", "ssd"), ("mnv2", "ssdlite")):
        config = SSDConfig(backbone=backbone, head=head, input_width=300, input_height=300, num_classes=3)
        for stage in ("train", "test", "deploy"):
            param = build_net(config, stage)
            phase = "TRAIN" if stage == "train" else "TEST"
            from caffessd.net import filter_phase
            net = Net(filter_phase(param, phase))
            net.memory_estimate()


def test_registry_covers_the_converted_layer_types():
    """Every layer type the ONNX converter emits has Caffe's checks registered."""
    from caffessd.onnxconv.registry import EMITTERS
    import caffessd.onnxconv  # noqa: F401  (registers the emitters)

    missing = sorted(t for t in EMITTERS if t not in CHECKERS)
    assert not missing, missing


def test_rule_error_names_field_and_rule():
    layer = caffe_pb2.LayerParameter(name="p", type="Permute", bottom=["x"], top=["y"])
    layer.permute_param.order.extend([0, 1, 1, 3])
    with pytest.raises(LayerRuleError) as info:
        check_layer(layer, [(1, 2, 3, 4)])
    assert (info.value.field, info.value.rule) == ("order", "axis 1 is repeated")


@pytest.mark.parametrize("kind,text,shape,field,rule", [
    ("ArgMax", "argmax_param { top_k: 0 }", (1, 5), "top_k", "at least 1"),
    ("ArgMax", "argmax_param { top_k: 9 axis: 1 }", (1, 5), "top_k", "more than the 5"),
    ("Tile", "tile_param { tiles: 0 }", (1, 5), "tiles", "positive"),
    ("Reduction", "reduction_param { axis: 3 }", (1, 5), "axis", "out of range"),
    ("Concat", "concat_param { axis: 1 concat_dim: 1 }", (1, 5), "axis", "not both"),
    ("Slice", "slice_param { slice_point: 3 slice_point: 2 }", (1, 5), "slice_point", "increasing"),
    ("Flatten", "flatten_param { axis: 1 end_axis: 0 }", (1, 5), "end_axis", "before"),
    ("Pooling", "pooling_param { global_pooling: true kernel_size: 2 }", (1, 2, 4, 4), "kernel_size", "global"),
    ("Pooling", "pooling_param { kernel_size: 2 pad_h: 1 }", (1, 2, 4, 4), "pad", "not both"),
    ("Convolution", "convolution_param { num_output: 2 }", (1, 2, 4, 4), "kernel_size", "once"),
])
def test_single_layer_rules(kind, text, shape, field, rule):
    tops = 'top: "b" top: "c" top: "d"' if kind == "Slice" else 'top: "b"'
    layer = protoio.parse_prototxt_text(f'name: "x" type: "{kind}" bottom: "a" {tops} {text}',
                                        caffe_pb2.LayerParameter())
    with pytest.raises(LayerRuleError) as info:
        check_layer(layer, [shape])
    assert info.value.field == field and rule in info.value.rule, info.value
