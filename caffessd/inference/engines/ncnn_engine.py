"""The ncnn engine: models written by `caffessd export-ncnn` (NAME.param,
NAME.bin and the NAME.caffessd.json sidecar) on Tencent's ncnn (pip
package `ncnn`, extra caffessd[ncnn]).

ncnn runs one image per extraction, so a batch is a loop. Its
DetectionOutput writes (label, score, xmin, ymin, xmax, ymax) rows and
nothing at all when an image has no detection; the engine prefixes the
image index to make caffessd's 7-column rows.

Threads: ncnn parallelises with OpenMP (its wheel bundles libgomp). By
default libgomp's threads spin for a while at each barrier before they sleep,
which is what a net of many short layers needs on free cores: MobileNet-SSD
300 with 2 threads 18.1 ms per image, against 32.4 ms with passive waiting
(face detector 4.5 against 16.4 ms; AMD EPYC, quiet 2-core machine). On a
machine whose cores are already busy the spinning becomes a stampede instead:
3.4 s per image against 0.16 s passive at a load average of 15. So the engine
asks for passive waiting (OMP_WAIT_POLICY=PASSIVE) only when the load average
is above the core count when ncnn is first loaded; an OMP_WAIT_POLICY or
GOMP_SPINCOUNT of the user's is always left as it is.

Precision: f32 turns off ncnn's float16/bfloat16 storage and arithmetic,
which its CPU builds otherwise pick where the CPU has them (the parity tests
need the float32 result); f16 turns float16 storage and arithmetic on.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from caffessd.errors import FormatError
from caffessd.inference.engines.base import BLOB, Engine, require_runtime

REDUCED_PRECISION_OPTIONS = ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic",
                             "use_bf16_storage", "use_bf16_packed")


class NcnnEngine(Engine):
    name = "ncnn"
    extra = "ncnn"
    suffixes = (".param",)
    devices = ("cpu",)
    precisions = ("f32", "f16")

    @classmethod
    def open(cls, path, threads: Optional[int] = None, device: Optional[str] = None,
             precision: Optional[str] = None) -> "NcnnEngine":
        self, facts = cls._with_sidecar(path, threads, device, precision, required=("inputs", "outputs"))
        weights = self.path.with_name(facts.get("bin") or self.path.with_suffix(".bin").name)
        if not weights.is_file():
            raise FormatError(weights, f"missing: the weights of {self.path.name}")
        _choose_wait_policy()             # read by libgomp when ncnn loads
        ncnn = require_runtime("ncnn", engine="ncnn", extra="ncnn")
        self.net = _load(ncnn, self.path, weights, threads, self.precision)
        self._ncnn = ncnn
        self.input_name = facts["inputs"][0]
        self.output_names = list(facts["outputs"])
        self.detections = facts.get("detections")
        self.raw_outputs = dict(facts.get("raw_outputs") or {})
        self.input_format = BLOB
        self.batch = None          # any number: one extraction per image
        return self

    def blobs(self, image: np.ndarray, names) -> Dict[str, np.ndarray]:
        """The named ncnn blobs (any of the model's, as flat arrays in Caffe's
        memory order) for one C,H,W image. One Extractor per call: thread-safe."""
        extractor = self.net.create_extractor()
        try:
            extractor.input(self.input_name, self._ncnn.Mat(np.ascontiguousarray(image, np.float32)))
            found = {}
            for name in names:
                status, mat = extractor.extract(name)
                if status != 0:
                    raise FormatError(self.path, f"ncnn failed to compute blob '{name}' (status {status})")
                # An image without detections leaves DetectionOutput's blob empty, and
                # numpy's view of an empty ncnn Mat crashes the process: test first.
                found[name] = (np.zeros(0, np.float32) if mat.empty() else
                               np.array(mat, dtype=np.float32, copy=True))
            return found
        finally:
            extractor.clear()

    def run(self, blob: np.ndarray) -> np.ndarray:
        if not self.detections:
            raise FormatError(self.path, "has no DetectionOutput (exported with --raw?)")
        rows = []
        for index, image in enumerate(np.asarray(blob, np.float32)):
            detections = self.blobs(image, [self.detections])[self.detections].reshape(-1)
            if detections.size % 6:
                raise FormatError(self.path, f"blob '{self.detections}' is not DetectionOutput rows of 6")
            detections = detections.reshape(-1, 6)
            rows.append(np.concatenate([np.full((len(detections), 1), index, np.float32), detections], axis=1))
        return np.concatenate(rows) if rows else np.zeros((0, 7), np.float32)

    def outputs(self, blob: np.ndarray) -> Dict[str, np.ndarray]:
        """For one image: the --raw outputs as loc, conf, priors in the ONNX --raw
        export's shapes; otherwise every output blob by its name."""
        names = list(self.raw_outputs.values()) or self.output_names
        found = self.blobs(np.asarray(blob, np.float32)[0], names)
        if self.raw_outputs:
            shapes = {"loc": (1, -1), "conf": (1, -1), "priors": (1, 2, -1)}
            return {key: found[name].reshape(shapes[key]) for key, name in self.raw_outputs.items()}
        return found


def wait_policy(environ, load_average: float, cpus: int) -> Optional[str]:
    """The OMP_WAIT_POLICY to set before ncnn loads: PASSIVE when more threads
    are already runnable than there are cores, else None (libgomp's default,
    a bounded spin). None too when the user has chosen a policy."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return None
    return "PASSIVE" if load_average > cpus else None


def _choose_wait_policy() -> None:
    # libgomp reads the variable once, when ncnn first loads it: set later it would
    # change nothing for ncnn and only leak into this process's children.
    if "ncnn" in sys.modules:
        return
    try:
        load = os.getloadavg()[0]
    except OSError:                    # no load average on this system: assume free cores
        load = 0.0
    policy = wait_policy(os.environ, load, os.cpu_count() or 1)
    if policy:
        os.environ["OMP_WAIT_POLICY"] = policy


def _load(ncnn, param: Path, weights: Path, threads: Optional[int], precision: str):
    net = ncnn.Net()
    for option in REDUCED_PRECISION_OPTIONS:
        if hasattr(net.opt, option):
            setattr(net.opt, option, False)
    if precision == "f16":
        net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = True
    net.opt.use_vulkan_compute = False
    if threads:
        net.opt.num_threads = int(threads)
    if net.load_param(str(param)) != 0:
        raise FormatError(param, "ncnn cannot read it as an ncnn param file")
    if net.load_model(str(weights)) != 0:
        raise FormatError(weights, f"ncnn cannot read it as the weights of {param.name} (truncated or another model's?)")
    return net


ENGINE = NcnnEngine
