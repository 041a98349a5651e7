"""The onnxruntime engine: caffessd's ONNX exports (and the models `detect`
converts from Caffe and caches) on onnxruntime's CPU, CUDA or TensorRT
execution provider.

--device picks the execution provider. CUDA and TensorRT come with the
`onnxruntime-gpu` wheel (installed in place of `onnxruntime`); asking for
them without it is one line saying so, and a provider that is present but
cannot start (no CUDA/cuDNN/TensorRT libraries) is refused too, rather
than onnxruntime's silent fall-back to the CPU (a "GPU" run that is not).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from caffessd.errors import CaffessdError, FormatError
from caffessd.inference.engines.base import BLOB, SERIAL, Engine, check_workload, rows_from

# --device -> the execution providers to ask for, most wanted first. CPU is
# always last: onnxruntime puts the nodes a GPU provider does not take
# (the NMS part of DetectionOutput, shape arithmetic) there.
PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}

ProviderList = List[Union[str, Tuple[str, dict]]]


def providers_for(device: str, available: Sequence[str], precision: str = "f32",
                  cache: Optional[Path] = None) -> ProviderList:
    """The provider list for InferenceSession(providers=...) on `device`,
    given onnxruntime's `available` providers; CaffessdError when the
    device's own provider is missing. TensorRT builds its engines once per
    model and input shape: with `cache` they are kept there."""
    wanted = PROVIDERS.get(device)
    if wanted is None:
        raise CaffessdError(f"unknown --device {device} (one of {', '.join(PROVIDERS)})")
    if precision == "f16" and device != "tensorrt":
        raise CaffessdError(f"--precision f16 needs --device tensorrt (onnxruntime runs f32 on {device})")
    head = wanted[0]
    if head not in available:
        raise CaffessdError(
            f"--device {device} needs onnxruntime's {head}, which this onnxruntime does not have (it has "
            f"{', '.join(available) or 'none'}): install the GPU build, pip install onnxruntime-gpu "
            f"(in place of onnxruntime), with CUDA{' and TensorRT' if device == 'tensorrt' else ''} on the machine")
    providers: ProviderList = []
    for name in wanted:
        if name not in available:
            continue  # TensorRT without the CUDA provider: it and the CPU still run the model
        if name == "TensorrtExecutionProvider":
            options = {"trt_fp16_enable": precision == "f16"}
            if cache is not None:
                options.update(trt_engine_cache_enable=True, trt_engine_cache_path=os.fspath(Path(cache) / "tensorrt"))
            providers.append((name, options))
        else:
            providers.append(name)
    return providers


def check_started(session, device: str, source) -> None:
    """onnxruntime drops a provider that fails to start (missing libraries)
    with only a log line and runs on the CPU; refuse that instead."""
    head = PROVIDERS[device][0]
    if head not in session.get_providers():
        raise FormatError(source, f"onnxruntime could not start its {head} for --device {device} (are the CUDA"
                                  f"{'/TensorRT' if device == 'tensorrt' else ''} libraries installed and a GPU "
                                  "visible?); it would have run on the CPU")


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    extra = ""              # a core dependency; --device cuda/tensorrt need the onnxruntime-gpu build instead
    suffixes = (".onnx",)
    devices = tuple(PROVIDERS)
    precisions = ("f32", "f16")

    @classmethod
    def runtime_module(cls) -> str:
        return "onnxruntime"

    @classmethod
    def open(cls, path, threads: Optional[int] = None, device: Optional[str] = None,
             precision: Optional[str] = None, optimized_path: Optional[Path] = None) -> "OnnxRuntimeEngine":
        from caffessd.onnxconv.metadata import load_model

        return cls.from_model(load_model(path), Path(path), threads, device, precision, optimized_path)

    @classmethod
    def from_model(cls, model, path: Optional[Path], threads: Optional[int] = None, device: Optional[str] = None,
                   precision: Optional[str] = None, optimized_path: Optional[Path] = None,
                   cache: Optional[Path] = None, workload: str = SERIAL) -> "OnnxRuntimeEngine":
        """An engine for a loaded onnx.ModelProto (`path` names it in errors;
        None for a model converted in memory). `optimized_path`: onnxruntime's
        optimised graph is cached there (CPU only, see caffessd.inference.session)."""
        import onnxruntime as ort

        from caffessd.onnxconv import read_metadata

        self = cls()
        self.path = path
        self.device = cls.check_choice("device", device, cls.devices)
        self.precision = cls.check_choice("precision", precision, cls.precisions)
        self.threads = threads
        self.metadata = read_metadata(model)
        providers = providers_for(self.device, ort.get_available_providers(), self.precision, cache)
        # What set_workload needs to make the session again: the file when
        # there is one (rather than keeping the model in memory for it).
        on_disk = path is not None and Path(path).is_file()
        self._model_bytes = None if on_disk else model.SerializeToString()
        self._optimized_path = optimized_path if self.device == "cpu" else None
        self._providers = providers
        self.workload = check_workload(workload)
        self._lock = threading.Lock()
        self.session = self._make_session(workload, model)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        output = self.session.get_outputs()[0]
        self.output_name = output.name
        self.output_shape = list(output.shape) if output.shape else None
        self.input_format = BLOB
        self.batch = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
        self.input_shape = list(first.shape)
        return self

    def _make_session(self, workload: str, model=None):
        from caffessd.inference.session import make_session
        from caffessd.onnxconv.metadata import load_model

        if model is None:  # the same ModelProto as at the start, so the optimised-graph cache still matches
            model = self._model_bytes if self._model_bytes is not None else load_model(self.path)
        try:
            session = make_session(model, self.threads, self._optimized_path, providers=self._providers,
                                   workload=workload)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise FormatError(self.path, f"onnxruntime cannot load it: {str(exc).splitlines()[0]}") from None
        if self.device != "cpu":
            check_started(session, self.device, self.path)
        return session

    def set_workload(self, workload: str) -> None:
        """A new session when the workload changes: onnxruntime fixes its
        threads' spinning when a session is made (caffessd.inference.session).
        With the optimised graph cached that takes tens of milliseconds; runs
        already under way finish on the old session. GPU sessions stay as
        they are: spinning is about CPU threads, and a TensorRT session is
        slow to make. So do 1-thread sessions (detect --streams): they have
        no worker threads to spin."""
        super().set_workload(workload)
        if self.device != "cpu" or self.threads == 1:
            return
        with self._lock:
            if workload != self.workload:
                self.session = self._make_session(workload)
                self.workload = workload

    def run(self, blob: np.ndarray) -> np.ndarray:
        return rows_from(self.session.run([self.output_name], {self.input_name: blob})[0], self.path)

    def outputs(self, blob: np.ndarray) -> Dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, {self.input_name: blob})))


ENGINE = OnnxRuntimeEngine
