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
- Spinning by workload (caffessd.inference.engines.base.SERIAL/PIPELINED).
  SERIAL: intra-op workers spin between the operators of a run and stop when
  the run ends (`session.force_spinning_stop`), so nothing spins between
  runs: 1.09-1.25x shorter runs on 2 threads than without spinning. PIPELINED
  (decoding threads beside inference): no spinning at all, since spinning
  workers would take the cores the decoders need: 1.09-1.13x the folder
  throughput of SERIAL's session. Measured with scripts/benchmark_deploy.py
  (part `spinning`; docs/performance.md).
- `optimized_path`: onnxruntime writes the optimised graph there; a later
  start loads that file with optimisation off and skips the optimiser (most of
  the start-up time of a big net). Detector keeps it in the model cache, named
  by the source model's content hash, with a `.sha256` companion that ties the
  file to its own bytes and to the model it came from (see make_session).
"""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

import onnx

from caffessd.inference.engines.base import PIPELINED, SERIAL
from caffessd.util.files import atomic_write_many

ModelLike = Union[onnx.ModelProto, bytes, str, os.PathLike]


def session_options(threads: Optional[int] = None, optimize: bool = True, optimized_path: Optional[Path] = None,
                    workload: str = SERIAL):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    if workload == PIPELINED:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    else:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if optimized_path is not None:
        options.optimized_model_filepath = os.fspath(optimized_path)
    options.log_severity_level = 3
    return options


def make_session(model: ModelLike, threads: Optional[int] = None, optimized_path: Optional[Path] = None,
                 providers: Optional[list] = None, workload: str = SERIAL):
    """An InferenceSession with the settings above, on the CPU unless
    `providers` says otherwise (caffessd.inference.engines.onnxruntime_engine
    chooses them for --device). With `optimized_path`, that file is used when
    it is sound (no optimisation at start-up) and written otherwise.

    The cached graph is trusted only when its `.sha256` companion holds both
    the hash of its own bytes and the hash of the model it was optimised from
    (the model given here): a truncated, tampered or foreign file, or one whose
    companion was rewritten to match other bytes, is optimised again with one
    warning line, never loaded (a file without companion, from an older
    caffessd, is optimised again without one). The session is made from the verified bytes,
    not the path, so the file cannot change in between."""
    import onnxruntime as ort

    providers = providers or ["CPUExecutionProvider"]
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = os.fspath(model)
    if optimized_path is None:
        return ort.InferenceSession(model, sess_options=session_options(threads, workload=workload),
                                    providers=providers)
    if isinstance(model, str):
        model = Path(model).read_bytes()  # hashed, and the session made from the same bytes
    optimized_path = Path(optimized_path)
    source = hashlib.sha256(model).hexdigest()
    cached, broken = read_optimized(optimized_path, source)
    if cached is not None:
        try:
            return ort.InferenceSession(cached, sess_options=session_options(threads, False, workload=workload),
                                        providers=providers)
        except Exception:  # checksum-sound yet unloadable (another onnxruntime build): rebuild below
            broken = "onnxruntime cannot load it"
    if broken:
        _warn(f"{optimized_path}: broken optimised-graph cache entry ({broken}); optimising again")
    return _session_saving_optimized(model, threads, optimized_path, providers, source, workload)


CHECKSUM_SUFFIX = ".sha256"


def read_optimized(target: Path, source: str):
    """(bytes, None) for a sound optimised graph of the model hashed `source`,
    (None, why) for a broken one, (None, None) when there is none."""
    sidecar = target.with_name(target.name + CHECKSUM_SUFFIX)
    if not sidecar.exists():  # none yet, or one from before companions (or half-written): made anew, silently
        return None, None
    try:
        data = target.read_bytes()
        own, made_from = sidecar.read_text(encoding="ascii").split()[:2]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"unreadable: {getattr(exc, 'strerror', None) or exc.__class__.__name__}"
    if hashlib.sha256(data).hexdigest() != own:
        return None, f"checksum mismatch ({len(data)} bytes)"
    if made_from != source:
        return None, "optimised from another model"
    return data, None


def _warn(message: str) -> None:
    import sys

    print(f"caffessd: warning: {message}", file=sys.stderr, flush=True)


def _session_saving_optimized(model: bytes, threads, target: Path, providers, source: str, workload: str):
    """Optimise into a temporary name, then rename it and its checksum into
    place, so a crash or a second process never leaves a half-written or
    unchecked cache file."""
    import onnxruntime as ort

    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        session = ort.InferenceSession(model, sess_options=session_options(threads, True, temporary, workload),
                                       providers=providers)
        data = temporary.read_bytes()
        atomic_write_many([(target, data), (target.with_name(target.name + CHECKSUM_SUFFIX),
                                            f"{hashlib.sha256(data).hexdigest()} {source}\n")])
        return session
    except Exception:  # cache not writable, or onnxruntime could not save: run without the cache
        return ort.InferenceSession(model, sess_options=session_options(threads, workload=workload),
                                    providers=providers)
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
