"""Running converted models with onnxruntime (CPU)."""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Union

import numpy as np
import onnx

ModelLike = Union[onnx.ModelProto, bytes, str, os.PathLike]


def onnx_session(model: ModelLike, intra_op_threads: Optional[int] = None):
    """A CPU InferenceSession with all graph optimisations on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = int(intra_op_threads)
    options.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = os.fspath(model)
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(model, feeds: Dict[str, np.ndarray], intra_op_threads: Optional[int] = None,
             outputs: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Run `model` (ModelProto, bytes, path or an InferenceSession) once; {output name: array}."""
    session = model if hasattr(model, "run") and hasattr(model, "get_outputs") else onnx_session(model, intra_op_threads)
    names = list(outputs) if outputs else [o.name for o in session.get_outputs()]
    feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
    return dict(zip(names, session.run(names, feeds)))
