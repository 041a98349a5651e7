"""gen-model reproduces chuanqi305's published MobileNet-SSD and MobileNetv2-SSDLite nets.

Each generated net is compared with the parsed reference structurally: net
fields, then every layer in order (name, type, bottoms, tops, every parameter;
floats to 1e-6 relative). The LMDB and labelmap paths may differ. On a
mismatch the test prints the first difference (layer index, name, field path,
both values).
"""
import re

import pytest

from caffessd import caffe_pb2
from caffessd.generators import SSDConfig, build_net, build_solver
from caffessd.protoio import parse_prototxt_text, read_prototxt
from conftest import MNV1_REF, MNV2_REF
from netdiff import message_difference, net_difference

PATHS = ["data_param.source", "annotated_data_param.label_map_file"]

MNV1 = dict(backbone="mnv1", head="ssd", input_width=300, input_height=300, num_classes=21)
TEMPLATE = dict(MNV1, dw_engine="caffe", new_conf_layers=True)
MNV2_SSDLITE = dict(backbone="mnv2", head="ssdlite", num_classes=21, relu6=True, tf_pad=True, bn="heads")
MNV2_SSD = dict(backbone="mnv2", head="ssd", num_classes=21, tf_pad=True)

CASES = [
    ("voc/MobileNetSSD_train.prototxt", MNV1, "train", MNV1_REF),
    ("voc/MobileNetSSD_test.prototxt", dict(MNV1, dw_engine="caffe"), "test", MNV1_REF),
    ("voc/MobileNetSSD_deploy.prototxt", dict(MNV1, bn="none", dw_engine="caffe"), "deploy", MNV1_REF),
    ("template/MobileNetSSD_train_template.prototxt", TEMPLATE, "train", MNV1_REF),
    ("template/MobileNetSSD_test_template.prototxt", TEMPLATE, "test", MNV1_REF),
    ("template/MobileNetSSD_deploy_template.prototxt", TEMPLATE, "deploy", MNV1_REF),
] + [
    (f"ssdlite/voc/{stage}.prototxt", MNV2_SSDLITE, stage, MNV2_REF) for stage in ("train", "test", "deploy")
] + [
    (f"voc/{stage}.prototxt", MNV2_SSD, stage, MNV2_REF) for stage in ("train", "test", "deploy")
]


def load_reference(path, num_classes=21):
    """Parse a reference net; the templates' placeholders clsNx stand for N x classes."""
    text = path.read_text()
    text = re.sub(r"\bcls(\d+)x\b", lambda m: str(int(m.group(1)) * num_classes), text)
    return parse_prototxt_text(text, caffe_pb2.NetParameter(), path)


@pytest.mark.parametrize("relative, options, stage, root", CASES, ids=[c[0] for c in CASES])
def test_reproduces_reference_net(relative, options, stage, root):
    reference = load_reference(root / relative)
    ours = build_net(SSDConfig(**options), stage)
    difference = net_difference(ours, reference, ignore=PATHS)
    assert difference is None, f"{relative}: {difference}"


def test_template_placeholders_follow_the_class_count():
    """The template's cls3x/cls6x become 3 and 6 boxes x classes for any class count."""
    reference = load_reference(MNV1_REF / "template/MobileNetSSD_deploy_template.prototxt", num_classes=5)
    ours = build_net(SSDConfig(**dict(TEMPLATE, num_classes=5)), "deploy")
    assert net_difference(ours, reference, ignore=PATHS) is None


def test_diff_reports_the_first_difference():
    """The comparison is not vacuous: a changed option shows up with its place."""
    reference = load_reference(MNV2_REF / "ssdlite/voc/deploy.prototxt")
    relu = net_difference(build_net(SSDConfig(**dict(MNV2_SSDLITE, relu6=False)), "deploy"), reference)
    assert relu == "layer 3 'Conv/relu' (ours 'Conv/relu'): type: ours='ReLU' reference='ReLU6'"
    scale = net_difference(build_net(SSDConfig(**dict(MNV2_SSDLITE, min_scale=0.21)), "deploy"), reference)
    assert scale.startswith("layer 146 'conv_13/expand_mbox_priorbox'") and "min_size[0]: ours=63 reference=60" in scale


@pytest.mark.parametrize("kind", ["train", "test"])
def test_solvers_match_published_ones(kind):
    reference = read_prototxt(MNV1_REF / f"solver_{kind}.prototxt", caffe_pb2.SolverParameter)
    ours = build_solver(SSDConfig(), kind, "example")
    assert ours.train_net == "example/train.prototxt" and list(ours.test_net) == ["example/test.prototxt"]
    assert message_difference(ours, reference, ignore=["train_net", "test_net", "snapshot_prefix"]) is None
