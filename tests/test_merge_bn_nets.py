"""merge-bn on MobileNet-SSD (mnv1) and MobileNetV2-SSDLite deploy nets that
gen-model generates with BatchNorm after every conv, and on the published
MobileNetV2-SSDLite deploy net, with random weights and random positive
BatchNorm statistics (eps 1e-3 and 1e-5, a random moving-average factor in
[0.5, 5) per layer). Merged and unmerged outputs must agree within 1e-4
relative in OpenCV 4.x cv2.dnn and, when present, caffessd's ONNX path.

The MobileNetV2 nets run at 640x640: at 300 their last SSDLite head sees a
1x1 map, where OpenCV 4.x computes padded depthwise convolutions wrongly (and
not repeatably), which would make the OpenCV comparison meaningless there.

The mnv1 caffemodel is written as a *train* net (data and loss layers around
the deploy layers), as a training snapshot would be.
"""
import numpy as np
import pytest

from caffessd import caffe_pb2, protoio
from caffessd.generators import SSDConfig, build_net
from caffessd.merge_bn import FoldResult, merge_bn
from caffessd.merge_bn.verify import run_opencv
from caffessd.net import Net
from caffessd.summary import summarize
from conftest import MNV2_REF
from merge_bn_helpers import random_weights, save_net

TOLERANCE = 1e-4


def generated_mnv1_ssd() -> caffe_pb2.NetParameter:
    return build_net(SSDConfig(backbone="mnv1", head="ssd", num_classes=21), "deploy")


def generated_mnv2_ssdlite() -> caffe_pb2.NetParameter:
    config = SSDConfig(backbone="mnv2", head="ssdlite", num_classes=21, relu6=True, tf_pad=True, bn="all",
                       input_width=640, input_height=640)
    return build_net(config, "deploy")


def published_mnv2_ssdlite() -> caffe_pb2.NetParameter:
    param = protoio.read_prototxt(MNV2_REF / "ssdlite" / "deploy.prototxt")
    param.input_shape[0].dim[2:] = [640, 640]  # PriorBox derives its steps from the real sizes
    return param


NETS = {"mnv1": generated_mnv1_ssd, "mnv2-ssdlite": generated_mnv2_ssdlite,
        "published-mnv2-ssdlite": published_mnv2_ssdlite}


def with_eps(param: caffe_pb2.NetParameter, eps):
    """Set every BatchNorm's eps (None: leave it unset, i.e. Caffe's default 1e-5)."""
    for layer in param.layer:
        if layer.type == "BatchNorm":
            if eps is None:
                layer.batch_norm_param.ClearField("eps")
            else:
                layer.batch_norm_param.eps = eps
    return param


def train_caffemodel(net: Net) -> caffe_pb2.NetParameter:
    """What a training snapshot holds: a data layer, the layers with blobs, a loss layer."""
    model = caffe_pb2.NetParameter(name=net.name + "_train")
    data = model.layer.add(name="data", type="AnnotatedData", top=["data", "label"])
    data.include.add(phase=caffe_pb2.TRAIN)
    model.layer.extend(FoldResult(net.param, net.weights).caffemodel().layer)
    loss = model.layer.add(name="mbox_loss", type="MultiBoxLoss",
                           bottom=["mbox_loc", "mbox_conf", "mbox_priorbox", "label"], top=["mbox_loss"])
    loss.include.add(phase=caffe_pb2.TRAIN)
    return model


def _runners():
    from caffessd.merge_bn.verify import run_onnx_path

    return [run_opencv, run_onnx_path]


@pytest.fixture(scope="module", params=[(name, eps) for name in NETS for eps in (1e-3, None)],
                ids=lambda p: f"{p[0]}-eps{p[1] or 'default'}")
def merged(request, tmp_path_factory):
    """(original Net, deploy prototxt, MergeReport) for one net and eps."""
    name, eps = request.param
    folder = tmp_path_factory.mktemp(f"{name}-{eps}")
    net = Net(with_eps(NETS[name](), eps))
    net.weights = random_weights(net, seed=len(name))
    prototxt, caffemodel = save_net(net, folder, "deploy")
    if name == "mnv1":
        protoio.write_caffemodel(train_caffemodel(net), caffemodel)
    runners = _runners()
    report = merge_bn(prototxt, caffemodel, folder / "no_bn", verify=True, tolerance=TOLERANCE,
                      runner=runners[0])
    extra = [merge_bn(prototxt, caffemodel, folder / f"no_bn_{i}", tolerance=TOLERANCE, runner=r)
             for i, r in enumerate(runners[1:])]
    return net, prototxt, report, extra


def test_outputs_agree(merged):
    _, _, report, extra = merged
    for rep in [report] + extra:
        checked = [row for row in rep.checks if row.checked]
        assert {row.blob for row in checked} == {"mbox_loc", "mbox_conf_flatten", "mbox_priorbox"}
        for row in checked:
            assert row.max_rel <= TOLERANCE, row.line()


def test_every_batchnorm_and_scale_is_gone(merged):
    net, _, report, _ = merged
    bn_scale = [l.name for l in net.param.layer if l.type in ("BatchNorm", "Scale")]
    assert bn_scale and not report.result.skipped
    assert sorted(f.layer for f in report.result.folded) == sorted(bn_scale)
    written = protoio.read_prototxt(report.prototxt)
    assert not [l for l in written.layer if l.type in ("BatchNorm", "Scale")]


def test_inspect_shows_fewer_layers_and_parameters(merged):
    net, prototxt, report, _ = merged
    before = summarize(prototxt, report.caffemodel.with_name("deploy.caffemodel"))
    after = summarize(report.prototxt, report.caffemodel)
    assert len(after.layers) == len(before.layers) - len(report.result.folded)
    # Each BatchNorm drops 2C+1 values, each Scale C (+C bias); a producer that
    # had no bias gains C.
    expected_drop = 0
    by_name = {row.name: row for row in before.layers}
    biased = set()
    for fold in report.result.folded:
        expected_drop += by_name[fold.layer].params
        producer = next(l for l in net.param.layer if l.name == fold.into)
        if not producer.convolution_param.bias_term and fold.into not in biased:
            biased.add(fold.into)
            expected_drop -= producer.convolution_param.num_output
    assert before.total_params - after.total_params == expected_drop > 0


def test_written_caffemodel_holds_only_deploy_layers(merged):
    _, _, report, _ = merged
    model = protoio.read_caffemodel(report.caffemodel)
    deploy_names = [l.name for l in protoio.read_prototxt(report.prototxt).layer]
    assert [l.name for l in model.layer] == deploy_names
    assert not [l for l in model.layer if l.type in ("AnnotatedData", "MultiBoxLoss")]
    reloaded = Net.load(report.prototxt, report.caffemodel, strict=True)
    for name, blobs in report.result.weights.items():
        for stored, expected in zip(reloaded.weights[name], blobs):
            np.testing.assert_array_equal(stored, expected)
