"""Helpers shared by the ONNX parity tests: run OpenCV's Caffe importer on the
same net and compare blobs."""
from __future__ import annotations

import numpy as np

cv2 = __import__("pytest").importorskip("cv2")


def opencv_forward(prototxt, caffemodel, feeds: dict, names):
    """OpenCV 4.x outputs of the named layers, fusion off so every blob is real."""
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.enableFusion(False)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name, value in feeds.items():
        net.setInput(value, name)
    outputs = net.forward(list(names))
    return dict(zip(names, outputs))


def assert_close(ours: np.ndarray, theirs: np.ndarray, name: str, rtol: float = 1e-4):
    """Relative tolerance against the blob's own magnitude (max |value|, at least 1e-3)."""
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.size == theirs.size, f"{name}: {ours.shape} vs OpenCV {theirs.shape}"
    ours = ours.reshape(theirs.shape)
    scale = max(float(np.abs(theirs).max()), 1e-3)
    worst = float(np.abs(ours - theirs).max()) / scale if ours.size else 0.0
    assert worst <= rtol, f"{name}: max relative difference {worst:.2e} > {rtol:.0e}"
