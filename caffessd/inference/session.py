"""The one onnxruntime session factory (CPU), and running a model once.

Chosen for these nets, measured with scripts/benchmark_deploy.py:
- Graph optimisation ORT_ENABLE_ALL: folds BatchNorm/Scale leftovers, fuses
  Conv+Relu/Clip and, for int8 QDQ models, turns DequantizeLinear->Conv->
  QuantizeLinear into QLinearConv (without it an int8 model runs float).
- Sequential execution, inter-op threads 1: an SSD graph is one chain of
  convolutions with small parallel branches (heads, NMS); running branches in
  parallel only adds thread hand-offs.
- Intra-op threads: `threads` (default: onnxruntime's, one per core). Batched
  detection wants all cores for one run; several detectors side by side want 1.
- Spinning off (`session.intra_op.allow_spinning` 0) when threads are given:
  idle workers do not burn cores the decode threads need.
- `optimized_path`: onnxruntime writes the optimised graph there; a later
  start loads that file with optimisation off and skips the optimiser (most of
  the start-up time of a big net). Detector keeps it in the model cache, named
  by the source model's content hash.
"""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

import onnx

ModelLike = Union[onnx.ModelProto, bytes, str, os.PathLike]


def session_options(threads: Optional[int] = None, optimize: bool = True, optimized_path: Optional[Path] = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_path is not None:
        options.optimized_model_filepath = os.fspath(optimized_path)
    options.log_severity_level = 3
    return options


def make_session(model: ModelLike, threads: Optional[int] = None, optimized_path: Optional[Path] = None):
    """A CPU InferenceSession with the settings above. With `optimized_path`,
    that file is used when it exists (no optimisation at start-up) and written
    otherwise."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if optimized_path is not None and Path(optimized_path).is_file():
        try:
            return ort.InferenceSession(os.fspath(optimized_path), sess_options=session_options(threads, False),
                                        providers=providers)
        except Exception:  # a stale or truncated cache file: rebuild it below
            Path(optimized_path).unlink(missing_ok=True)
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = os.fspath(model)
    if optimized_path is None:
        return ort.InferenceSession(model, sess_options=session_options(threads), providers=providers)
    return _session_saving_optimized(model, threads, Path(optimized_path), providers)


def _session_saving_optimized(model, threads, target: Path, providers):
    """Optimise into a temporary name then rename, so a crash or a second
    process never leaves a half-written cache file."""
    import onnxruntime as ort

    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        session = ort.InferenceSession(model, sess_options=session_options(threads, True, temporary),
                                       providers=providers)
        os.replace(temporary, target)
        return session
    except Exception:  # cache not writable, or onnxruntime could not save: run without the cache
        return ort.InferenceSession(model, sess_options=session_options(threads), providers=providers)
    finally:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass


def optimized_cache_path(model_path: Path, cache: Path) -> Path:
    """Where the optimised copy of `model_path` lives: keyed by its content and onnxruntime's version."""
    import onnxruntime as ort

    digest = hashlib.sha256()
    with open(model_path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    # ORT_ENABLE_ALL output may hold kernels laid out for this CPU: key on the machine too.
    digest.update(f"{ort.__version__} {platform.machine()} {platform.processor()}".encode())
    return Path(cache) / "optimized" / f"{Path(model_path).stem}-{digest.hexdigest()[:20]}.ort.onnx"


def onnx_session(model: ModelLike, intra_op_threads: Optional[int] = None):
    """A CPU session for `model` with the settings above (no optimised-graph cache)."""
    return make_session(model, intra_op_threads)


def run_onnx(model, feeds: Dict[str, np.ndarray], intra_op_threads: Optional[int] = None,
             outputs: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Run `model` (ModelProto, bytes, path or an InferenceSession) once; {output name: array}."""
    session = model if hasattr(model, "run") and hasattr(model, "get_outputs") else make_session(model, intra_op_threads)
    names = list(outputs) if outputs else [o.name for o in session.get_outputs()]
    feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
    return dict(zip(names, session.run(names, feeds)))
