"""The engine interface: what every inference runtime behind caffessd's
Detector provides, so that `detect`, `eval` and `caffessd.Detector` run any
exported artifact with the same preprocessing, JSON, pictures and reports.

An engine module (caffessd/inference/engines/<name>_engine.py) defines one
subclass of Engine and exposes it as the module-level name `ENGINE`. The
module itself imports only numpy and light caffessd modules; its runtime
(onnxruntime, openvino, ncnn, ai_edge_litert...) is imported inside `open`
through `require_runtime`, so a missing runtime is one line naming the pip
extra, and listing the engines never loads a runtime.

    engine = ENGINE.open(path, threads=2, device=None, precision=None)
    engine.metadata        # caffessd metadata: mean, scale, input_size, ...
    rows = engine.run(blob)   # float32 [K, 7] DetectionOutput rows

Why one small interface: the work that decides whether a deployed detector
finds what Caffe found (resize, mean, scale, channel order, label names,
padding rows, batching, thresholds) then lives once, in the Detector, and
each runtime only has to turn an input tensor into DetectionOutput rows.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional, Tuple

import numpy as np

from caffessd.errors import CaffessdError, FormatError
from caffessd.inference.engines.sidecar import read_sidecar

# The two forms an engine can take its input in (Engine.input_format).
BLOB = "blob"      # float32 [N, 3, H, W]: resized, mean-subtracted, scaled, in the net's channel order
IMAGE = "image"    # uint8 [N, H, W, 3]: BGR pixels resized to the net's input size; the artifact
                   # normalises in its own graph (OpenVINO IR with PrePostProcessor steps)

PRECISIONS = ("f32", "bf16", "f16")

# What else runs while the engine computes (Engine.set_workload).
SERIAL = "serial"        # one image at a time, nothing else busy during a run (a loop over frames, a benchmark)
PIPELINED = "pipelined"  # decoding threads run beside inference (detect_many with workers, eval)
WORKLOADS = (SERIAL, PIPELINED)


class MissingRuntime(CaffessdError):
    """An engine whose runtime library is not installed: one line naming the extra."""

    def __init__(self, engine: str, package: str, extra: str, who: Optional[str] = None):
        self.engine, self.package, self.extra = engine, package, extra
        super().__init__(f"{who or f'the {engine} engine'} needs the '{package}' package, which is not installed: "
                         f"pip install 'caffessd[{extra}]'")


def require_runtime(module: str, engine: str, extra: str, package: Optional[str] = None, who: Optional[str] = None):
    """Import and return `module`, or raise MissingRuntime naming the extra
    (`who` replaces "the <engine> engine" in the message: "export-openvino --int8").
    Only a missing top-level package counts as missing: a runtime that is
    installed but broken re-raises its own error (it needs a different fix)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.split(".")[0] == exc.name.split(".")[0]:
            raise MissingRuntime(engine, package or module.split(".")[0], extra, who) from None
        raise


class Engine:
    """One opened artifact on one runtime. Subclasses set the class
    attributes and implement `open` and `run` (and `outputs` where the
    runtime can return the raw output tensors by name).

    Class attributes
      name        the --engine name: "onnxruntime", "openvino", "ncnn", "tflite"
      extra       pip extra holding its runtime: caffessd[<extra>]
      suffixes    file suffixes it opens when no --engine is given (".onnx")
      also_opens  further suffixes it opens when named with --engine (OpenVINO: ".onnx")
      devices     --device values it accepts; the first one is the default
      precisions  --precision values it accepts; the first one is the default

    Instance attributes (set by `open`)
      path          the artifact's main file (None for an in-memory model)
      metadata      dict with the keys of caffessd's ONNX metadata, values
                    JSON-decoded: mean, scale, input_size [w, h],
                    channel_order "BGR"/"RGB", labels {"1": "face", ...},
                    detection_output {...}, kind "full"/"raw", inputs.
                    `Preprocessing.from_metadata(engine.metadata)` must work.
      input_format  BLOB or IMAGE (see above)
      batch         images per run the artifact takes (None: any number)
      device, precision, threads   what it was opened with (after defaults)
    """

    name: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    suffixes: ClassVar[Tuple[str, ...]] = ()
    also_opens: ClassVar[Tuple[str, ...]] = ()
    devices: ClassVar[Tuple[str, ...]] = ("cpu",)
    precisions: ClassVar[Tuple[str, ...]] = ("f32",)

    path: Optional[Path] = None
    metadata: Dict[str, Any]
    input_format: str = BLOB
    batch: Optional[int] = 1
    device: str = "cpu"
    precision: str = "f32"
    threads: Optional[int] = None

    @classmethod
    def open(cls, path, threads: Optional[int] = None, device: Optional[str] = None,
             precision: Optional[str] = None) -> "Engine":
        """Load the artifact at `path` (FormatError naming it when it is
        missing, not this engine's format, or not a caffessd detector).
        `threads`: intra-op threads (None: the runtime's default);
        `device`/`precision`: None for the engine's default, else one of
        `devices`/`precisions` (checked with `check_choice`)."""
        raise NotImplementedError

    @classmethod
    def _with_sidecar(cls, path, threads, device, precision, required: Tuple[str, ...]):
        """A new engine with its options checked and the facts it needs from
        the metadata file beside `path` (engines whose format has no place
        for metadata: ncnn, TFLite). Returns (engine, facts): facts is the
        sidecar's entry under the engine's name; FormatError when that entry
        lacks one of `required` (the file was not written by this export)."""
        self = cls()
        self.path = Path(path)
        self.device = cls.check_choice("device", device, cls.devices)
        self.precision = cls.check_choice("precision", precision, cls.precisions)
        self.threads = threads
        self.metadata = read_sidecar(self.path)
        facts = self.metadata.get(cls.name)
        if not isinstance(facts, dict) or not all(facts.get(key) for key in required):
            raise FormatError(self.path, f"its metadata file was not written by caffessd export-{cls.name} "
                                         f"(no \"{cls.name}\" {' and '.join(required)})")
        return self, facts

    def run(self, blob: np.ndarray) -> np.ndarray:
        """DetectionOutput rows for one input batch (`input_format`, N
        images, N == batch when batch is fixed): float32 [K, 7] rows
        (image index in the batch, label, score, xmin, ymin, xmax, ymax;
        box corners normalised to 0..1). Padding rows (label < 0 or score
        <= 0) may be present and are ignored. Safe to call from several
        threads at once (detect --streams)."""
        raise NotImplementedError

    def set_workload(self, workload: str) -> None:
        """Tune the runtime's threads for SERIAL or PIPELINED work (engines
        start SERIAL). Runtimes whose idle threads spin (onnxruntime) spin
        within a run for SERIAL work, which shortens it, and not at all for
        PIPELINED work, where spinning threads take the cores the decoding
        threads need. Engines without such a choice ignore it."""
        check_workload(workload)

    def outputs(self, blob: np.ndarray) -> Dict[str, np.ndarray]:
        """All graph outputs by name (for --raw exports and the parity
        tests); engines that cannot name their outputs need not provide it."""
        raise NotImplementedError(f"the {self.name} engine does not expose raw outputs")

    def label(self) -> str:
        """Short name for report tables: the engine, then device and precision where not the defaults."""
        parts = [self.name] + [value for value, default in ((self.device, "cpu"), (self.precision, "f32"))
                               if value != default]
        return " ".join(parts)

    def describe(self) -> str:
        """One line for logs and benchmark tables."""
        extra = f", {self.threads} thread(s)" if self.threads else ""
        return f"{self.name} ({self.device}, {self.precision}{extra})"

    @classmethod
    def available(cls) -> bool:
        """Whether the runtime is installed (without importing it)."""
        import importlib.util

        return importlib.util.find_spec(cls.runtime_module()) is not None

    @classmethod
    def runtime_module(cls) -> str:
        """The Python module of the runtime (override when it differs from `extra`)."""
        return cls.extra

    @classmethod
    def check_choice(cls, what: str, value: Optional[str], allowed: Tuple[str, ...]) -> str:
        """`value` or the default (allowed[0]); CaffessdError naming the engine otherwise."""
        if value is None:
            return allowed[0]
        value = str(value).lower()
        if value not in allowed:
            raise CaffessdError(f"the {cls.name} engine does not take --{what} {value} "
                                f"(it takes {', '.join(allowed)})")
        return value


def check_workload(workload: str) -> str:
    """`workload` when it is one of WORKLOADS; CaffessdError otherwise."""
    if workload not in WORKLOADS:
        raise CaffessdError(f"unknown workload {workload!r} (one of {', '.join(WORKLOADS)})")
    return workload


def workload_for(workers: int, streams: int = 1) -> str:
    """The workload of a pipeline with `workers` decoding threads and
    `streams` runs at once: PIPELINED when anything runs beside inference."""
    return PIPELINED if workers > 0 or streams > 1 else SERIAL


def rows_from(output: np.ndarray, source) -> np.ndarray:
    """A runtime's DetectionOutput tensor ([1, 1, K, 7], [K, 7], ...) as
    float32 [K, 7]; FormatError naming `source` for any other width."""
    array = np.asarray(output, dtype=np.float32)
    if array.size % 7 or (array.ndim and array.shape[-1] != 7 and array.size):
        raise FormatError(source, f"its output has shape {list(array.shape)}, not DetectionOutput rows of 7")
    return array.reshape(-1, 7)
