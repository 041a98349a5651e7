"""Running a converted Caffe net to measure what --plain-caffe costs.

Prefers caffessd's own ONNX path (caffessd.onnxconv + onnxruntime); falls back
to OpenCV's Caffe importer when that path is not available.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from caffessd.errors import CaffessdError


def probe_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A fixed, image-like NCHW input in TF's preprocessed range [-1, 1]:
    smooth gradients plus texture, so every layer sees varied values."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    channels = [np.sin(3 * x + k) * np.cos(2 * y - k) for k in range(3)]
    image = np.stack(channels)[None] * 0.8 + rng.uniform(-0.2, 0.2, (1, 3, height, width))
    return np.clip(image, -1, 1).astype(np.float32)


def run_caffe(prototxt, caffemodel, image: np.ndarray,
              outputs: Sequence[str] = ("mbox_loc", "mbox_conf")) -> Dict[str, np.ndarray]:
    try:
        from caffessd.onnxconv import convert
        from caffessd.inference.session import run_onnx
    except ImportError:
        return _run_opencv(prototxt, caffemodel, image, outputs)
    model = convert(str(prototxt), str(caffemodel), raw=True, extra_outputs=list(outputs))
    result = run_onnx(model, {"data": image})
    return {name: np.asarray(result[name]) for name in outputs}


def _run_opencv(prototxt, caffemodel, image, outputs) -> Dict[str, np.ndarray]:
    try:
        import cv2
    except ImportError:
        raise CaffessdError("measuring the deviation needs caffessd's ONNX converter or OpenCV") from None
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setInput(image)
    return dict(zip(outputs, net.forward(list(outputs))))
