"""OpenVINO: `export-openvino` IRs and the openvino engine, proven against
onnxruntime on caffessd's ONNX export of the same nets.

Nets: the embedded face detector and gen-model nets with random weights and
random BatchNorm statistics (MobileNet-SSD 300, MobileNetV2-SSDLite 300,
MobileNetV2-SSD 640 on chosen feature layers). For each:
- raw outputs (loc, conf after softmax, priors) of the --raw IR, fed the
  picture, equal onnxruntime's on the --raw ONNX fed caffessd's blob, within
  1e-4 of each blob's magnitude: the in-graph PrePostProcessor steps compute
  what make_blob does;
- final detections from an image file through Detector (IR on OpenVINO vs
  ONNX on onnxruntime, threshold 0.1, so up to keep_top_k rows): boxes within
  0.5 px, scores within 1e-3, near-ties handled as tests/engine_parity.py says.
int8 (NNCF) and bf16: the same faces on the bundled photos, IoU >= 0.9.
"""
import numpy as np
import pytest

from caffessd.inference.engines.openvino_engine import without_openvino_telemetry

with without_openvino_telemetry():  # imported as caffessd imports it (docs/export-openvino.md)
    pytest.importorskip("openvino")

from caffessd import protoio  # noqa: E402
from caffessd.generators import SSDConfig, build_net  # noqa: E402
from caffessd.onnxconv import convert  # noqa: E402
from caffessd.export.openvino import export_openvino  # noqa: E402
from caffessd.image.preprocess import Preprocessing, load_image  # noqa: E402
from caffessd.inference.detector import Detector  # noqa: E402
from engine_parity import assert_blobs_close, assert_same_faces, iou, match_detections  # noqa: E402
from onnx_parity import build_net as random_net  # noqa: E402

MOBILENET = {"mean": [127.5], "scale": 0.007843, "channel_order": "BGR"}
NETS = {
    "mobilenet-ssd-300": SSDConfig(backbone="mnv1", bn="all", num_classes=21),
    "mobilenetv2-ssdlite-300": SSDConfig(backbone="mnv2", head="ssdlite", relu6=True, bn="all", num_classes=21),
    "mobilenetv2-ssd-640": SSDConfig(backbone="mnv2", head="ssd", relu6=True, bn="all", num_classes=4, width=0.5,
                                     input_width=640, input_height=640,
                                     feature_layers=["conv_13/expand", "Conv_1", "layer_19_2_2", "layer_19_2_3",
                                                     "layer_19_2_4"]),
}


@pytest.fixture(scope="module")
def nets(tmp_path_factory, face_prototxt, face_caffemodel):
    """name -> (prototxt, caffemodel, metadata): the face net and random-weight gen-model nets."""
    folder = tmp_path_factory.mktemp("nets")
    found = {"face": (face_prototxt, face_caffemodel, {"mean": [0.0], "scale": 1.0, "channel_order": "BGR"})}
    for index, (name, config) in enumerate(NETS.items()):
        text = protoio.prototxt_text(build_net(config, "deploy"))
        # Random BatchNorm statistics; loc weights scaled down so boxes stay near their priors.
        prototxt, caffemodel, _ = random_net(folder, name, text, seed=index + 1, loc_scale=0.1)
        found[name] = (prototxt, caffemodel, MOBILENET)
    return found


def _exports(nets, name, folder):
    prototxt, caffemodel, metadata = nets[name]
    paths = {}
    for kind, raw in (("raw", True), ("full", False)):
        onnx_path = folder / f"{name}-{kind}.onnx"
        onnx_path.write_bytes(convert(prototxt, caffemodel, raw=raw, metadata=metadata).SerializeToString())
        xml = folder / f"{name}-{kind}.xml"
        export_openvino(prototxt, caffemodel, xml, metadata=metadata, raw=raw)
        paths[kind] = (onnx_path, xml)
    return paths


@pytest.mark.parametrize("name", ["face", *NETS])
def test_ir_equals_onnxruntime(name, nets, tmp_path, face_photos):
    from caffessd.inference.engines import open_engine
    from caffessd.image.preprocess import make_blob, resize_linear

    paths = _exports(nets, name, tmp_path)
    onnx_raw, xml_raw = paths["raw"]
    reference = open_engine(onnx_raw, threads=2)
    engine = open_engine(xml_raw, threads=2)
    assert engine.name == "openvino" and engine.input_format == "image" and engine.metadata["kind"] == "raw"
    prep = Preprocessing.from_metadata(reference.metadata)
    image = load_image(face_photos[0])
    picture = resize_linear(image, prep.width, prep.height)[None]
    assert_blobs_close(engine.outputs(picture), reference.outputs(make_blob(image, prep)), ["loc", "conf", "priors"],
                       what=f"{name}: ")

    onnx_full, xml_full = paths["full"]
    settings = reference.metadata["detection_output"]
    ours = Detector(artifact=xml_full, threshold=0.1, threads=2)
    theirs = Detector(artifact=onnx_full, threshold=0.1, threads=2)
    assert ours.engine.name == "openvino" and theirs.engine.name == "onnxruntime"
    assert ours.engine.metadata["detection_output"] == settings
    for photo in face_photos:
        expected = theirs(photo)
        assert expected, f"{name}: the reference finds something to compare on {photo.name}"
        match_detections(ours(photo), expected, threshold=0.1, keep_top_k=settings["keep_top_k"])


@pytest.mark.parametrize("name", ["mobilenet-ssd-300", "face"])
def test_openvino_runs_the_onnx_file_too(name, nets, tmp_path, face_photos):
    """--engine openvino on caffessd's ONNX export (OpenVINO's ONNX frontend,
    DetectionOutput as the exported NonMaxSuppression subgraph). The engine
    moves the face detector's 2-class Softmax onto its long axis there too."""
    prototxt, caffemodel, metadata = nets[name]
    onnx_path = tmp_path / "ssd.onnx"
    onnx_path.write_bytes(convert(prototxt, caffemodel, metadata=metadata).SerializeToString())
    ours = Detector(artifact=onnx_path, engine="openvino", threshold=0.1, threads=2)
    theirs = Detector(artifact=onnx_path, threshold=0.1, threads=2)
    assert ours.engine.name == "openvino" and ours.engine.input_format == "blob"
    if name == "face":
        runtime = ours.engine.compiled.get_runtime_model().get_ordered_ops()
        shapes = [list(op.get_input_partial_shape(0).to_shape()) for op in runtime
                  if op.get_rt_info()["layerType"].astype(str) == "Softmax"]
        assert shapes == [[1, 2, 4420]]
    keep_top_k = ours.engine.metadata["detection_output"]["keep_top_k"]
    for photo in face_photos:
        match_detections(ours(photo), theirs(photo), threshold=0.1, keep_top_k=keep_top_k)


@pytest.fixture(scope="module")
def face_reference(face_photos):
    detector = Detector(threads=2)
    return {photo: detector(photo) for photo in face_photos}


def test_int8_ir_finds_the_same_faces(face_prototxt, face_caffemodel, face_photos, face_reference, tmp_path):
    from PIL import Image

    pytest.importorskip("nncf")
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for photo in face_photos:  # the photos and their mirror images
        image = Image.open(photo)
        image.save(calibration / photo.name)
        image.transpose(Image.FLIP_LEFT_RIGHT).save(calibration / f"flipped-{photo.name}")
    xml = tmp_path / "face-int8.xml"
    report = export_openvino(face_prototxt, face_caffemodel, xml, calibrate=calibration, images=10)
    assert report.int8_ops > 10 and report.calibration_images == 4
    detector = Detector(artifact=xml, threads=2)
    assert detector.engine.metadata["quantization"]["float_ops"] == ["DetectionOutput"]
    for photo, expected in face_reference.items():
        assert_same_faces(detector(photo), expected, min_iou=0.9)


def test_bf16_finds_the_same_faces(face_prototxt, face_caffemodel, face_reference, tmp_path):
    from caffessd.inference.engines.openvino_engine import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16 (AVX-512 BF16 / AMX)")
    xml = tmp_path / "face.xml"
    export_openvino(face_prototxt, face_caffemodel, xml)
    detector = Detector(artifact=xml, precision="bf16", threads=2)
    assert detector.engine.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    for photo, expected in face_reference.items():
        assert_same_faces(detector(photo), expected, min_iou=0.9)


def test_engine_drops_the_identity_resize_a_plain_openvino_user_keeps(face_prototxt, face_caffemodel,
                                                                       face_reference, tmp_path):
    """The IR resizes any picture in its graph (for users who run it in OpenVINO
    themselves); caffessd's engine feeds pictures already at the net's size, so
    it takes that Interpolate out (OpenVINO would run it, 300x300 -> 300x300)."""
    import openvino as ov

    xml = tmp_path / "face.xml"
    export_openvino(face_prototxt, face_caffemodel, xml)

    def runtime_ops(compiled):
        return {op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()}

    detector = Detector(artifact=xml, threads=2)
    assert "Interpolate" not in runtime_ops(detector.engine.compiled)
    for photo, expected in face_reference.items():
        assert_same_faces(detector(photo), expected, min_iou=0.9)

    # Plain OpenVINO, the photo at its own size (not the net's 320x240): the graph resizes it.
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert "Interpolate" in runtime_ops(compiled)
    photo, expected = next(iter(face_reference.items()))
    image = load_image(photo)
    assert image.shape[:2] != (240, 320)
    rows = compiled.create_infer_request().infer({0: image[None]})[0].reshape(-1, 7)
    width, height = image.shape[1], image.shape[0]
    found = [row for row in rows if row[2] >= detector.threshold]
    assert len(found) == len(expected)
    for det in expected:
        best = max(iou(det.box, np.array(row[3:7]) * [width, height, width, height]) for row in found)
        assert best >= 0.8, f"face {det.box}: plain OpenVINO's best IoU {best:.2f}"


def test_ir_has_constant_priors_and_softmax_along_the_long_axis(face_prototxt, face_caffemodel,
                                                                face_reference, tmp_path):
    """Two exact rewrites for speed: DetectionOutput's priors are a Constant
    (not the ONNX raw form's priors + 0 * loc[0], which OpenVINO ran at every
    call), and the face detector's 2-class Softmax runs along the 4420 priors
    between two Transposes. The compiled net still finds the same faces, and
    the raw IR's conf equals onnxruntime's (test_ir_equals_onnxruntime)."""
    import openvino as ov

    xml = tmp_path / "face.xml"
    export_openvino(face_prototxt, face_caffemodel, xml)
    model = ov.Core().read_model(str(xml))
    detection = next(op for op in model.get_ordered_ops() if op.get_type_name() == "DetectionOutput")
    priors = detection.input_value(2).get_node()
    assert priors.get_type_name() == "Constant", priors.get_type_name()
    assert priors.get_output_partial_shape(0).to_shape()[-1] == 4420 * 4
    softmaxes = [op for op in model.get_ordered_ops() if op.get_type_name() == "Softmax"]
    assert len(softmaxes) == 1
    shape, axis = softmaxes[0].get_input_partial_shape(0).to_shape(), softmaxes[0].get_attributes()["axis"]
    assert list(shape) == [1, 2, 4420] and axis % len(shape) == 1
    detector = Detector(artifact=xml, threads=2)
    for photo, expected in face_reference.items():
        assert_same_faces(detector(photo), expected, min_iou=0.9)


NORMALIZE_NET = """input: "data"
input_shape { dim: 1 dim: 3 dim: 24 dim: 32 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "per_position" type: "Normalize" bottom: "conv" top: "per_position"
        norm_param { across_spatial: false channel_shared: false eps: 5 } }
layer { name: "whole" type: "Normalize" bottom: "conv" top: "whole"
        norm_param { across_spatial: true channel_shared: true eps: 5000 } }
"""


def test_normalize_becomes_one_normalize_l2_op_with_the_same_numbers(tmp_path, face_prototxt, face_caffemodel):
    """SSD's Normalize, exported to ONNX as x / sqrt(sum(x^2) + eps), runs as
    OpenVINO's NormalizeL2 (eps_mode add) in the IR: per position and across
    the whole map, with eps values near the sums of squares (5 per position,
    where the sums' median is 17; 5000 over the map, whose sum is 14710), so
    putting eps outside the root (eps_mode max) or leaving it out fails the
    1e-4 comparison with onnxruntime on the ONNX export. The face detector's four Normalize
    layers are rewritten too; test_ir_equals_onnxruntime[face] checks its numbers."""
    import openvino as ov

    from caffessd.image.preprocess import make_blob
    from caffessd.inference.engines import open_engine

    prototxt, caffemodel, _ = random_net(tmp_path, "normalize", NORMALIZE_NET, seed=3)
    metadata = {"mean": [100.0], "scale": 0.02, "channel_order": "BGR"}
    onnx_path = tmp_path / "normalize.onnx"
    onnx_path.write_bytes(convert(prototxt, caffemodel, raw=True, metadata=metadata).SerializeToString())
    xml = tmp_path / "normalize.xml"
    export_openvino(prototxt, caffemodel, xml, metadata=metadata, raw=True)

    def op_types(path):
        return [op.get_type_name() for op in ov.Core().read_model(str(path)).get_ordered_ops()]
    types = op_types(xml)
    assert types.count("NormalizeL2") == 2 and "ReduceSum" not in types and "Sqrt" not in types, types
    picture = np.random.default_rng(0).integers(0, 256, (1, 24, 32, 3), dtype=np.uint8)
    reference = open_engine(onnx_path, threads=2).outputs(make_blob(picture[0], Preprocessing.from_metadata(
        {**metadata, "input_size": [32, 24]})))
    ours = open_engine(xml, threads=2).outputs(picture)
    assert_blobs_close(ours, reference, ["per_position", "whole"], what="normalize: ")

    face_xml = tmp_path / "face.xml"
    export_openvino(face_prototxt, face_caffemodel, face_xml)
    face_types = op_types(face_xml)
    assert face_types.count("NormalizeL2") == 4 and "ReduceSum" not in face_types, face_types


def test_onnx_in_memory_is_read_as_convert_model_reads_it(face_prototxt, face_caffemodel, monkeypatch):
    """read_onnx_bytes (OpenVINO's ONNX frontend plus ov.convert_model's own
    graph transformations) gives convert_model's graph: the same ops in the
    same order with the same shapes, and the same constants."""
    import io

    import openvino as ov

    from caffessd.inference.engines.openvino_engine import read_onnx_bytes

    monkeypatch.setenv("CI", "true")  # convert_model's telemetry stays off in CI; this test calls it once
    for raw in (True, False):
        data = convert(face_prototxt, face_caffemodel, raw=raw).SerializeToString()
        ours, theirs = read_onnx_bytes(data), ov.convert_model(io.BytesIO(data))

        def signature(model):
            return [(op.get_type_name(), [str(op.get_output_partial_shape(i)) for i in range(op.get_output_size())])
                    for op in model.get_ordered_ops()]
        assert signature(ours) == signature(theirs)
        for a, b in zip(ours.get_ordered_ops(), theirs.get_ordered_ops()):
            if a.get_type_name() == "Constant":
                assert np.array_equal(a.get_data(), b.get_data()), a.get_friendly_name()
        assert [o.get_names() for o in ours.outputs] == [o.get_names() for o in theirs.outputs]


def test_export_and_engine_never_fork_for_telemetry(tmp_path, face_prototxt, face_caffemodel, face_photos):
    """Neither `export-openvino` (float and NNCF int8) nor the engine on an
    in-memory ONNX model loads OpenVINO's telemetry or forks the process. Its
    sender forked from a thread at `import openvino`; such children hung in
    Python's after-fork clean-up (PyAV's threads in thread-locals), kept
    caffessd's inherited SIGTERM handler, and outlived the test workers. A
    fresh interpreter, so no other test's imports count, with CI unset (where
    the telemetry would run) and no pytest loaded (NNCF skips its telemetry
    under pytest)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("nncf")
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for photo in face_photos:
        (calibration / photo.name).write_bytes(photo.read_bytes())
    script = f"""
import os, sys
forks = []
os.register_at_fork(before=lambda: forks.append(1))
from caffessd.export.openvino import export_openvino
from caffessd.inference.engines.openvino_engine import OpenVinoEngine
from caffessd.onnxconv import convert
export_openvino({str(face_prototxt)!r}, {str(face_caffemodel)!r}, {str(tmp_path / 'face.xml')!r})
export_openvino({str(face_prototxt)!r}, {str(face_caffemodel)!r}, {str(tmp_path / 'face-int8.xml')!r},
                calibrate={str(calibration)!r})
data = convert({str(face_prototxt)!r}, {str(face_caffemodel)!r}).SerializeToString()
OpenVinoEngine.from_onnx_bytes(data, "memory", threads=1)
import openvino_telemetry  # importable again afterwards, for a program of the user's that wants it
print(len(forks), sys.modules["openvino.tools.ovc.telemetry_utils"].tm.__name__, "pytest" in sys.modules)
"""
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "TF_BUILD", "JENKINS_URL")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "0 openvino.tools.ovc.telemetry_stub False", done.stdout


def test_engine_takes_any_array_a_caller_may_hold(face_prototxt, face_caffemodel, face_photos, tmp_path):
    """The engine hands OpenVINO the caller's array itself (a shared tensor, no
    copy). Arrays it cannot share (read-only memory, another order or dtype)
    still run, with the same rows; the caller's array is left as it was."""
    xml = tmp_path / "face.xml"
    export_openvino(face_prototxt, face_caffemodel, xml)
    detector = Detector(artifact=xml, threads=2)
    picture = detector.prepare(load_image(face_photos[0]))
    expected = detector.run_blob(picture)
    assert len(expected) > 0
    read_only = picture.copy()
    read_only.setflags(write=False)
    for variant in (read_only, np.asfortranarray(picture), picture.astype(np.float64)):
        before = np.array(variant, copy=True)
        np.testing.assert_array_equal(detector.run_blob(variant), expected)
        np.testing.assert_array_equal(variant, before)
