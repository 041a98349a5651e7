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


def random_weights(net, seed: int = 0, loc_scale: float = 1.0):
    """Plausible random blobs for every learnable layer of `net` (a Net without weights).

    BatchNorm gets positive variances and a scale-factor blob of 2 (0 for
    layers named *_f0, where Caffe multiplies the statistics by 0); PReLU slopes and Normalize
    scales stay in their usual ranges; layers named *loc* are scaled by
    `loc_scale` so decoded boxes stay near their priors.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for info in net.walk(with_weights=False):
        shapes, kind, name = info.param_shapes, info.type, info.name
        if not shapes:
            continue
        if kind == "BatchNorm":
            c = shapes[0]
            factor = 0.0 if name.endswith("_f0") else 2.0  # 0: Caffe zeroes the statistics
            arrays = [rng.normal(0, 1, c), rng.uniform(0.5, 2.0, c), np.array([factor])]
        elif kind == "PReLU":
            arrays = [rng.uniform(0.05, 0.5, shapes[0])]
        elif kind == "Normalize":
            arrays = [rng.uniform(1.0, 10.0, shapes[0])]
        else:
            arrays = []
            for shape in shapes:
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                arrays.append(rng.normal(0, 1.0 / np.sqrt(max(fan_in, 1)), shape))
            if "loc" in name:
                arrays = [a * loc_scale for a in arrays]
        weights[name] = [np.asarray(a, dtype=np.float32) for a in arrays]
    return weights


def build_net(tmp_path, name: str, text: str, seed: int = 0, loc_scale: float = 1.0):
    """Write `text` as a prototxt plus a random caffemodel; returns (prototxt, caffemodel, Net)."""
    from caffessd import caffe_pb2, protoio
    from caffessd.net import Net

    prototxt = tmp_path / f"{name}.prototxt"
    prototxt.write_text(text)
    bare = Net.load(prototxt)
    model = caffe_pb2.NetParameter(name=name)
    weights = random_weights(bare, seed, loc_scale)
    for source in bare.layers:  # like a real caffemodel: every layer, blobs where learnable
        layer = model.layer.add(name=source.name, type=source.type)
        for array in weights.get(source.name, []):
            protoio.array_to_blob(array, layer.blobs.add())
    caffemodel = tmp_path / f"{name}.caffemodel"
    protoio.write_caffemodel(model, caffemodel)
    return prototxt, caffemodel, Net.load(prototxt, caffemodel)


def assert_same_detections(ours: np.ndarray, theirs: np.ndarray, atol: float = 1e-4):
    """Same (N, 7) rows in the same order; OpenCV 4.x may pad with all-zero rows."""
    ours, theirs = ours.reshape(-1, 7), theirs.reshape(-1, 7)
    assert ours.shape[0] <= theirs.shape[0], f"{len(ours)} rows vs OpenCV {len(theirs)}"
    np.testing.assert_allclose(ours, theirs[: len(ours)], atol=atol, rtol=0)
    assert not theirs[len(ours):].any(), "OpenCV found detections that caffessd did not"
