"""The engine layer (caffessd.inference.engines): the registry picks an
engine by file type or name, detect and eval run any artifact with the same
JSON and reports, onnxruntime's --device picks execution providers (the
selection logic, checked against onnxruntime's real provider list and fake
ones), and hostile input is one line with nothing half-written."""
import json
import sys

import pytest

from caffessd.errors import CaffessdError, FormatError
from caffessd.inference.engines import ENGINE_NAMES, engine_class, engine_for_path, known_engines, open_engine
from caffessd.inference.engines.base import MissingRuntime, require_runtime
from caffessd.inference.engines.onnxruntime_engine import check_started, providers_for
from conftest import run_in_process


# ------------------------------------------------------------------ registry
def test_engines_by_file_type_and_name(tmp_path):
    assert ENGINE_NAMES == ("onnxruntime", "openvino", "ncnn", "tflite")
    assert engine_for_path("a/ssd.onnx").name == "onnxruntime"
    assert engine_for_path("ssd.XML").name == "openvino"
    names = [engine.name for engine in known_engines()]
    assert names[:2] == ["onnxruntime", "openvino"]
    with pytest.raises(FormatError, match=r"cannot tell which engine runs a '\.pb' file .*give --engine"):
        engine_for_path(tmp_path / "model.pb")
    with pytest.raises(FormatError, match="is part of a Caffe model, not an exported one"):
        engine_for_path(tmp_path / "deploy.prototxt")
    with pytest.raises(CaffessdError, match="unknown engine 'tensorflow'"):
        engine_class("tensorflow")
    weird = tmp_path / "ssd.param"
    weird.write_text("7767517\n")
    with pytest.raises(FormatError, match=r"the openvino engine opens \.xml and \.onnx files, not '\.param'"):
        open_engine(weird, engine="openvino")
    with pytest.raises(FormatError, match="no such model file"):
        open_engine(tmp_path / "absent.onnx")


def test_missing_runtime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ModuleNotFoundError
    with pytest.raises(MissingRuntime) as caught:
        require_runtime("openvino", engine="openvino", extra="openvino")
    assert str(caught.value) == ("the openvino engine needs the 'openvino' package, which is not installed: "
                                 "pip install 'caffessd[openvino]'")
    assert not engine_class("openvino").available() or "openvino" in sys.modules


# ------------------------------------------------------------------ onnxruntime --device
def test_provider_selection():
    cpu_only = ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cpu", cpu_only) == ["CPUExecutionProvider"]
    assert providers_for("cuda", gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = providers_for("tensorrt", gpu, precision="f16", cache=__import__("pathlib").Path("/c"))
    assert trt[0] == ("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                                    "trt_engine_cache_path": "/c/tensorrt"})
    assert trt[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # TensorRT without the CUDA provider still has the CPU for what it does not take.
    assert providers_for("tensorrt", ["TensorrtExecutionProvider", "CPUExecutionProvider"])[1:] == \
        ["CPUExecutionProvider"]
    with pytest.raises(CaffessdError, match=r"--device cuda needs onnxruntime's CUDAExecutionProvider.*"
                                            r"pip install onnxruntime-gpu"):
        providers_for("cuda", cpu_only)
    with pytest.raises(CaffessdError, match="TensorrtExecutionProvider"):
        providers_for("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(CaffessdError, match="--precision f16 needs --device tensorrt"):
        providers_for("cuda", gpu, precision="f16")


def test_a_provider_that_did_not_start_is_refused():
    class Session:  # what onnxruntime leaves when CUDA's libraries are missing: the CPU only
        def get_providers(self):
            return ["CPUExecutionProvider"]

    with pytest.raises(FormatError, match="could not start its CUDAExecutionProvider.*would have run on the CPU"):
        check_started(Session(), "cuda", "ssd.onnx")

    class Started:
        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    check_started(Started(), "cuda", "ssd.onnx")


def test_detector_device_on_this_onnxruntime(tmp_path):
    """The real onnxruntime: --device cpu runs; cuda is refused in one line
    unless this is the GPU build (then it must really start)."""
    import onnxruntime

    from caffessd.inference.detector import Detector

    assert Detector(cache=tmp_path, device="cpu").engine.session.get_providers() == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        detector = Detector(cache=tmp_path, device="cuda")
        assert detector.engine.session.get_providers()[0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(CaffessdError, match="pip install onnxruntime-gpu"):
            Detector(cache=tmp_path, device="cuda")
    with pytest.raises(CaffessdError, match="the onnxruntime engine does not take --precision bf16"):
        Detector(cache=tmp_path, precision="bf16")


# ------------------------------------------------------------------ CLI: detect and eval on an IR
openvino_needed = pytest.mark.skipif(not engine_class("openvino").available(), reason="the openvino extra")


@pytest.fixture(scope="module")
def face_ir(tmp_path_factory, face_prototxt, face_caffemodel):
    from caffessd.export.openvino import export_openvino

    folder = tmp_path_factory.mktemp("ir")
    export_openvino(face_prototxt, face_caffemodel, folder / "face.xml")
    return folder / "face.xml"


@openvino_needed
def test_detect_cli_on_an_ir_writes_the_same_json(face_ir, face_photos, tmp_path, capsys):
    runs = {}
    for name, extra in {"onnx": [], "ir": ["--artifact", face_ir], "ir-engine": ["--onnx", face_ir, "--engine",
                                                                                 "openvino", "--streams", "2"]}.items():
        code, err, out = run_in_process(["detect", *face_photos, "--out", tmp_path / name, *extra], capsys)
        assert code == 0, err
        runs[name] = json.loads((tmp_path / name / "detections.json").read_text())
        assert all((tmp_path / name / f"{i:04d}_{p.stem}.jpg").stat().st_size > 1000 for i, p in enumerate(face_photos))
    for name in ("ir", "ir-engine"):
        for ours, reference in zip(runs[name], runs["onnx"]):
            assert len(ours["detections"]) == len(reference["detections"]) >= 1
            for a, b in zip(ours["detections"], reference["detections"]):
                assert a["label"] == b["label"] and abs(a["score"] - b["score"]) <= 1e-3
                assert max(abs(p - q) for p, q in zip(a["box"], b["box"])) <= 0.5


@openvino_needed
def test_eval_cli_takes_irs_side_by_side(face_ir, tmp_path, capsys):
    from eval_builders import make_face_voc

    root = make_face_voc(tmp_path / "voc")
    out = tmp_path / "report"
    code, err, stdout = run_in_process(["eval", face_ir, "--dataset", root, "--format", "voc", "--split", "test",
                                        "--out", out, "--threads", "2"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["engine"] == "openvino" and report["results"][0]["summary"]["mAP"] == 1.0
    assert "openvino" in stdout  # the table says which engine ran


# ------------------------------------------------------------------ hostile input
def _one_line(code, err):
    lines = err.strip().splitlines()
    assert code in (1, 2) and len(lines) == 1 and lines[0].startswith("caffessd: error: "), err
    return lines[0]


def test_missing_openvino_is_one_line(monkeypatch, face_photos, face_prototxt, face_caffemodel, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)
    fake = tmp_path / "ssd.xml"
    fake.write_text("<net/>")
    line = _one_line(*run_in_process(["detect", face_photos[0], "--artifact", fake, "--out", tmp_path / "out"],
                                     capsys)[:2])
    assert "pip install 'caffessd[openvino]'" in line
    line = _one_line(*run_in_process(["export-openvino", face_prototxt, face_caffemodel, "-o", tmp_path / "x.xml"],
                                     capsys)[:2])
    assert "pip install 'caffessd[openvino]'" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssd.xml"]


def test_missing_nncf_is_one_line(monkeypatch, face_prototxt, face_caffemodel, face_photos, tmp_path, capsys):
    if not engine_class("openvino").available():
        pytest.skip("the openvino extra")
    monkeypatch.setitem(sys.modules, "nncf", None)
    line = _one_line(*run_in_process(["export-openvino", face_prototxt, face_caffemodel, "-o", tmp_path / "q.xml",
                                      "--int8", "--calibrate", face_photos[0].parent], capsys)[:2])
    assert "export-openvino --int8 needs the 'nncf' package" in line and "caffessd[openvino]" in line
    assert not list(tmp_path.iterdir())


@openvino_needed
def test_hostile_irs_and_outputs(face_ir, face_prototxt, face_caffemodel, face_photos, tmp_path, capsys):
    import shutil

    import openvino as ov

    photo = face_photos[0]
    # An IR without its .bin.
    lonely = tmp_path / "lonely.xml"
    shutil.copy(face_ir, lonely)
    line = _one_line(*run_in_process(["detect", photo, "--artifact", lonely, "--out", tmp_path / "o1"], capsys)[:2])
    assert "lonely.bin: missing" in line
    # An IR that caffessd did not write (no metadata in rt_info).
    plain = tmp_path / "plain.xml"
    model = ov.Core().read_model(str(face_ir))
    stripped = ov.Model(model.get_results(), model.get_parameters(), "plain")  # a new model: no rt_info
    ov.save_model(stripped, str(plain))
    line = _one_line(*run_in_process(["detect", photo, "--artifact", plain, "--out", tmp_path / "o2"], capsys)[:2])
    assert "plain.xml: is an OpenVINO IR without caffessd metadata" in line
    # A --raw IR has no DetectionOutput rows.
    raw = tmp_path / "raw.xml"
    code, err, _ = run_in_process(["export-openvino", face_prototxt, face_caffemodel, "-o", raw, "--raw"], capsys)
    assert code == 0, err
    line = _one_line(*run_in_process(["detect", photo, "--artifact", raw, "--out", tmp_path / "o3"], capsys)[:2])
    assert "exported with --raw" in line
    # --precision bf16 where the engine cannot.
    line = _one_line(*run_in_process(["detect", photo, "--precision", "bf16", "--out", tmp_path / "o4"], capsys)[:2])
    assert "the onnxruntime engine does not take --precision bf16" in line
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_export_openvino_never_overwrites_its_inputs(face_prototxt, face_caffemodel, tmp_path, capsys):
    import shutil

    weights = tmp_path / "net.bin"  # a caffemodel named like the IR's weights file
    shutil.copy(face_caffemodel, weights)
    before = weights.read_bytes()
    line = _one_line(*run_in_process(["export-openvino", face_prototxt, weights, "-o", tmp_path / "net.xml"],
                                     capsys)[:2])
    assert "the IR weights would overwrite the caffemodel" in line
    assert weights.read_bytes() == before and not (tmp_path / "net.xml").exists()
    line = _one_line(*run_in_process(["export-openvino", face_prototxt, face_caffemodel, "-o", tmp_path / "net.onnx"],
                                     capsys)[:2])
    assert "an OpenVINO IR is NAME.xml" in line
    line = _one_line(*run_in_process(["export-openvino", face_prototxt, face_caffemodel, "-o", tmp_path / "q.xml",
                                      "--int8"], capsys)[:2])
    assert "--int8 and --calibrate go together" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    if engine_class("openvino").available():
        line = _one_line(*run_in_process(["export-openvino", face_prototxt, face_caffemodel, "-o", tmp_path / "q.xml",
                                          "--int8", "--calibrate", empty], capsys)[:2])
        assert "empty: no images to calibrate with" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "net.bin"]


@openvino_needed
def test_a_caffe_model_on_openvino_and_engines_that_need_their_export(face_prototxt, face_caffemodel, face_photos,
                                                                      tmp_path):
    """A Caffe model runs on OpenVINO through its cached ONNX conversion (OpenVINO reads ONNX);
    an engine that reads only its own files asks for the export."""
    from caffessd.inference.detector import Detector
    from engine_parity import match_detections

    ours = Detector(face_prototxt, face_caffemodel, engine="openvino", cache=tmp_path, threshold=0.3, threads=2)
    theirs = Detector(face_prototxt, face_caffemodel, cache=tmp_path, threshold=0.3, threads=2)
    assert ours.engine.name == "openvino" and ours.onnx_path == theirs.onnx_path
    match_detections(ours(face_photos[1]), theirs(face_photos[1]), threshold=0.3)
    for name in ("ncnn", "tflite"):
        try:
            cls = engine_class(name)
        except CaffessdError:
            continue  # not in this caffessd yet
        with pytest.raises(CaffessdError, match=f"the {name} engine runs its own files .*caffessd export-{name}"):
            Detector(face_prototxt, face_caffemodel, engine=name, cache=tmp_path)
        assert cls.name == name
