"""The OpenVINO engine: IRs written by `caffessd export-openvino` (.xml +
.bin) and, with `--engine openvino`, caffessd's ONNX exports read by
OpenVINO's ONNX frontend.

An IR from caffessd takes the picture itself: uint8 [N, H, W, 3] BGR, with
the model's mean, scale and channel order (and a resize, for callers who
feed other sizes) compiled into the graph by OpenVINO's PrePostProcessor.
Here it is fed the picture caffessd already resized with OpenCV's exact
INTER_LINEAR (the input is reshaped to the net's size before compiling, so
the in-graph resize is an identity), which keeps its detections those of
`detect` on the ONNX model. Its caffessd metadata (the keys of the ONNX
export's metadata_props) sits in the IR's rt_info under "caffessd".

Precision: OpenVINO's CPU plugin runs in bf16 by default on CPUs with
AVX-512 BF16 or AMX, which moves scores by ~1e-3. caffessd always asks for
an explicit INFERENCE_PRECISION_HINT: f32 unless bf16 is asked for, and bf16
only where the CPU computes it natively (no silent emulation).
"""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from caffessd.errors import CaffessdError, FormatError
from caffessd.inference.engines.base import BLOB, IMAGE, Engine, require_runtime, rows_from
from caffessd.inference.engines.openvino_passes import speed_passes
from caffessd.util.imports import unimportable

RT_INFO_ROOT = "caffessd"       # rt_info section holding caffessd's metadata, one JSON text per key
INPUT_NAME = "image"            # the IR's input tensor name
OUTPUT_NAME = "detection_out"   # the IR's DetectionOutput rows


def openvino():
    """The openvino module, or MissingRuntime naming caffessd[openvino]."""
    if sys.modules.get("openvino") is not None:  # imported already: nothing left to guard
        return sys.modules["openvino"]
    with without_openvino_telemetry():
        return require_runtime("openvino", engine="openvino", extra="openvino")


def without_openvino_telemetry():
    """Import OpenVINO (and NNCF) as on a machine without openvino_telemetry,
    unless this process already loaded it.

    `import openvino` posts a usage event to Google Analytics, unless the user
    opted out or CI is set, and NNCF does so per call. On Linux the sender
    forks the process from a worker thread (multiprocessing's fork). The child
    runs Python's after-fork clean-up of the other threads' state, and PyAV's
    swscale contexts in thread-locals make that wait for threads the child
    does not have. The child then hangs; caffessd's SIGTERM handler, which it
    inherits, never runs to end it, so it outlives the command. Both packages
    fall back to their own no-op telemetry when the module cannot be imported,
    which is what this arranges for the duration of the import."""
    return unimportable("openvino_telemetry")


def set_rt_metadata(model, metadata: Dict[str, Any]) -> None:
    """Store `metadata` in `model`'s rt_info: ["caffessd", key] = JSON text."""
    for key, value in metadata.items():
        model.set_rt_info(json.dumps(value), [RT_INFO_ROOT, key])


def read_rt_metadata(model) -> Dict[str, Any]:
    """caffessd's metadata from an ov.Model's rt_info ({} when it has none)."""
    if not model.has_rt_info([RT_INFO_ROOT]):
        return {}
    found = {}
    for key in model.get_rt_info([RT_INFO_ROOT]).astype(dict):
        text = model.get_rt_info([RT_INFO_ROOT, key]).astype(str)
        try:
            found[key] = json.loads(text)
        except ValueError:
            found[key] = text
    return found


def cpu_capabilities() -> List[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of this CPU (FP32, BF16, INT8, ...)."""
    return [str(c) for c in openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX), so that
    --precision bf16 is a real speed-up rather than an emulation."""
    return "BF16" in cpu_capabilities()


def compile_config(threads: Optional[int], precision: str) -> Dict[str, Any]:
    """CPU plugin settings: one stream of `threads` threads (latency, as
    detect runs one image at a time), and the precision asked for."""
    config: Dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoEngine(Engine):
    name = "openvino"
    extra = "openvino"
    suffixes = (".xml",)
    also_opens = (".onnx",)
    devices = ("cpu",)
    precisions = ("f32", "bf16")

    @classmethod
    def open(cls, path, threads: Optional[int] = None, device: Optional[str] = None,
             precision: Optional[str] = None) -> "OpenVinoEngine":
        ov = openvino()
        path = Path(path)
        core = ov.Core()
        if path.suffix.lower() == ".xml":
            model = _read_ir(core, path)
            metadata = read_rt_metadata(model)
            if not metadata:
                raise FormatError(path, "is an OpenVINO IR without caffessd metadata in its rt_info; convert the "
                                        "Caffe model with `caffessd export-openvino` (or run the ONNX export with "
                                        "--engine openvino)")
        else:
            from caffessd.onnxconv.metadata import read_metadata

            metadata = read_metadata(path)
            model = _read_onnx(core, path)
        return cls.from_model(model, metadata, path, threads, device, precision)

    @classmethod
    def from_onnx_bytes(cls, data: bytes, source, threads: Optional[int] = None, device: Optional[str] = None,
                        precision: Optional[str] = None) -> "OpenVinoEngine":
        """An engine for an ONNX model held in memory (a Caffe model converted
        by `detect` whose cache folder could not be written)."""
        import onnx

        from caffessd.onnxconv.metadata import read_metadata

        try:
            model = read_onnx_bytes(data)
        except Exception as exc:  # OpenVINO raises its own exception types
            raise FormatError(source, f"OpenVINO cannot read the converted model: {_first_line(exc)}") from None
        return cls.from_model(model, read_metadata(onnx.load_from_string(data)), source, threads, device, precision)

    @classmethod
    def from_model(cls, model, metadata: Dict[str, Any], path, threads, device, precision) -> "OpenVinoEngine":
        ov = openvino()
        self = cls()
        self.path = Path(path) if path is not None else None
        self.device = cls.check_choice("device", device, cls.devices)
        self.precision = cls.check_choice("precision", precision, cls.precisions)
        if self.precision == "bf16" and not cpu_has_bf16():
            raise CaffessdError("--precision bf16 needs a CPU with AVX-512 BF16 or AMX, which this one lacks "
                                f"(OpenVINO reports {', '.join(cpu_capabilities())}); use f32")
        self.threads = threads
        self.metadata = metadata
        parameter = model.inputs[0]
        self.input_format = IMAGE if parameter.get_element_type() == ov.Type.u8 else BLOB
        self.input_dtype = parameter.get_element_type().to_dtype()  # a shared tensor takes no other
        if self.input_format == IMAGE:
            _fix_image_size(model, metadata, self.path)
        shape = model.inputs[0].get_partial_shape()
        self.batch = shape[0].get_length() if shape.rank.is_static and shape[0].is_static else None
        speed_passes(model)
        try:
            self.compiled = ov.Core().compile_model(model, "CPU", compile_config(threads, self.precision))
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line report
            raise FormatError(self.path, f"OpenVINO cannot compile it: {_first_line(exc)}") from None
        self.output_names = [next(iter(o.get_names()), f"output{i}") for i, o in enumerate(self.compiled.outputs)]
        self._local = threading.local()
        return self

    def _request(self):
        """One infer request per thread: detect --streams runs images side by side."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def _infer(self, blob: np.ndarray):
        """One synchronous run on this thread's request. The input is an
        ov.Tensor over the caller's own array (shared memory: OpenVINO reads it
        in place, and it is not touched after infer returns) set on the
        request, then a bare infer(): infer({0: array}, share_inputs=True)
        does the same through OpenVINO's Python dispatch, about 0.03 ms more
        per run (of a 0.75 ms int8 face detector). The outputs stay the
        request's own; the callers copy the ones they keep."""
        request = self._request()
        # C order, the input's dtype, writeable (a shared ov.Tensor refuses
        # read-only memory): the caller's array itself when it already is.
        array = np.require(blob, dtype=self.input_dtype, requirements=("C", "W"))
        request.set_input_tensor(openvino().Tensor(array, shared_memory=True))
        request.infer()
        return request

    def run(self, blob: np.ndarray) -> np.ndarray:
        request = self._infer(blob)
        return rows_from(request.get_output_tensor(0).data.copy(), self.path)

    def outputs(self, blob: np.ndarray) -> Dict[str, np.ndarray]:
        request = self._infer(blob)
        return {name: request.get_output_tensor(i).data.copy() for i, name in enumerate(self.output_names)}


def read_onnx_bytes(data: bytes):
    """An ov.Model of an ONNX model held in memory: OpenVINO's ONNX frontend
    (Core.read_model), then the graph transformations ov.convert_model applies
    after it, which give the same graph and weights (tests/test_openvino.py
    compares the two).

    Not ov.convert_model itself: it starts OpenVINO's telemetry, whose sender
    forks the process from a worker thread (multiprocessing's fork on Linux)
    to post to Google Analytics. A child forked while other threads hold
    native resources hangs in Python's after-fork clean-up: PyAV's swscale
    contexts in thread-locals wait there for threads the child does not have.
    Such children outlived the test workers; in a user's process they would
    outlive `caffessd detect`."""
    ov = openvino()
    model = ov.Core().read_model(data)
    try:  # ov.convert_model's own steps (openvino.tools.ovc's moc_emit_ir)
        from openvino._offline_transformations import (apply_fused_names_cleanup, apply_moc_transformations,
                                                       compress_quantize_weights_transformation)
    except ImportError:  # a private module: without it the plugin still optimises what it compiles
        return model
    apply_moc_transformations(model, cf=False, smart_reshape=True)
    compress_quantize_weights_transformation(model)
    apply_fused_names_cleanup(model)
    return model


def _read_ir(core, path: Path):
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise FormatError(weights, f"missing: the weights of {path.name} (an OpenVINO IR is NAME.xml + NAME.bin)")
    try:
        return core.read_model(str(path), str(weights))
    except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line report
        raise FormatError(path, f"not an OpenVINO IR OpenVINO can read: {_first_line(exc)}") from None


def _read_onnx(core, path: Path):
    try:
        return core.read_model(str(path))
    except Exception as exc:
        raise FormatError(path, f"OpenVINO cannot read it: {_first_line(exc)}") from None


def _fix_image_size(model, metadata: Dict[str, Any], source) -> None:
    """Reshape the picture input to the net's own size and drop the in-graph
    resize, now an identity: the Detector feeds pictures resized by caffessd."""
    size = metadata.get("input_size")
    if not size:
        raise FormatError(source, "its caffessd metadata has no input_size")
    shape = model.inputs[0].get_partial_shape()
    batch = shape[0].get_length() if shape.rank.is_static and shape[0].is_static else 1
    model.reshape({model.inputs[0].get_any_name(): [batch, int(size[1]), int(size[0]), 3]})
    _bypass_identity_resizes(model)


def _bypass_identity_resizes(model) -> None:
    """Take out Interpolate nodes whose output has their input's shape.

    OpenVINO's CPU plugin still runs a resize from 300x300 to 300x300 (1.3 ms of
    a 5 ms int8 MobileNet-SSD) and the layout Transposes around it, which
    otherwise fold into the first convolution."""
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Interpolate":
            continue
        before, after = node.get_input_partial_shape(0), node.get_output_partial_shape(0)
        if before.is_static and before == after:
            node.output(0).replace(node.input_value(0))


def _first_line(exc: Exception) -> str:
    """OpenVINO's messages span lines ("Exception from src/...:"); keep the telling one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return ((telling or lines or [exc.__class__.__name__])[-1])[:300]


ENGINE = OpenVinoEngine
