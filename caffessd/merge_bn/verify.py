"""Checking that a merged net computes what the original did.

Both nets run on the same inputs through one engine (a *runner*) and every
checked blob is compared. A runner loads a net once and returns a function
that runs it:

    run = runner(net: Net, blobs: [blob name])
    run(feeds: {input name: array}) -> {blob name: array}

`default_runner()` is caffessd's ONNX path (caffessd.onnxconv); `run_opencv`
runs OpenCV 4.x's Caffe importer (cv2.dnn), the independent oracle the tests
use as well.

Checked blobs are the net's outputs, except that a DetectionOutput is
replaced by its inputs: its top-k selection and NMS turn a 1e-7 difference in
a score into a different row order, while its inputs determine it completely.
Its own output is still compared and printed, but only for information.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from caffessd import protoio
from caffessd.errors import CaffessdError
from caffessd.net import Net

Run = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]
Runner = Callable[[Net, List[str]], Run]


class VerificationError(CaffessdError):
    """The merged net's outputs differ from the original's by more than the tolerance."""

    def __init__(self, message: str, checks: List["OutputDiff"]):
        super().__init__(message)
        self.checks = checks


@dataclass
class OutputDiff:
    """How far one blob of the merged net is from the original's, on one input."""

    input: str          # "random (seed 0)" or the image path
    blob: str
    shape: tuple
    max_abs: float
    max_rel: float      # max_abs / largest magnitude of the original's blob
    checked: bool       # False for DetectionOutput rows (informational)
    note: str = ""

    def passes(self, tolerance: float) -> bool:
        return not self.checked or self.max_rel <= tolerance

    def line(self) -> str:
        shape = "x".join(str(d) for d in self.shape)
        text = f"{self.input}  {self.blob} [{shape}]: max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}"
        return text + (f" ({self.note})" if self.note else "")


# ---------------------------------------------------------------- what to compare

def checked_blobs(net: Net) -> List[str]:
    """Outputs of `net`, with each DetectionOutput's top replaced by its bottoms."""
    detection_tops = {top for layer in net.param.layer if layer.type == "DetectionOutput" for top in layer.top}
    blobs = [name for name in net.output_names() if name not in detection_tops]
    for layer in net.param.layer:
        if layer.type == "DetectionOutput":
            blobs += [b for b in layer.bottom if b not in blobs]
    return blobs


def detection_blobs(net: Net) -> List[str]:
    return [top for layer in net.param.layer if layer.type == "DetectionOutput" for top in layer.top]


def random_feeds(net: Net, seed: int = 0) -> Dict[str, np.ndarray]:
    """A fixed input per net input: uniform in [-1, 1), the range of a normalised image."""
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
            for name, shape in net.input_shapes().items()}


def image_feeds(net: Net, image_path) -> Dict[str, np.ndarray]:
    """The image resized to the first input, BGR, scaled to [-1, 1] ((x - 127.5) / 127.5,
    MobileNet-SSD's preprocessing); other inputs get the fixed random values."""
    from PIL import Image, UnidentifiedImageError

    inputs = net.input_shapes()
    if not inputs:
        raise CaffessdError("the net declares no input, so it cannot be run on an image")
    name, shape = next(iter(inputs.items()))
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise CaffessdError(f"input '{name}' has shape {shape}, not N x 1|3 x H x W; cannot feed an image")
    try:
        with Image.open(image_path) as image:
            image = image.convert("L" if shape[1] == 1 else "RGB").resize((shape[3], shape[2]), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except FileNotFoundError:
        raise CaffessdError(f"{image_path}: no such image") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise CaffessdError(f"{image_path}: cannot read image ({exc})") from None
    if shape[1] == 3:
        chw = pixels[:, :, ::-1].transpose(2, 0, 1)   # RGB -> BGR, as Caffe nets expect
    else:
        chw = pixels[None]
    batch = np.broadcast_to((chw - 127.5) / 127.5, shape).astype(np.float32)
    feeds = random_feeds(net)
    feeds[name] = np.ascontiguousarray(batch)
    return feeds


# ---------------------------------------------------------------- comparing

def difference(input_label: str, blob: str, reference: np.ndarray, merged: np.ndarray,
               checked: bool = True) -> OutputDiff:
    reference = np.asarray(reference, dtype=np.float64)
    merged = np.asarray(merged, dtype=np.float64)
    if reference.shape != merged.shape:
        return OutputDiff(input_label, blob, reference.shape, float("inf"), float("inf"), checked,
                          f"shape {merged.shape} after merging")
    if reference.size == 0:
        return OutputDiff(input_label, blob, reference.shape, 0.0, 0.0, checked)
    if not np.all(np.isfinite(reference)) or not np.all(np.isfinite(merged)):
        return OutputDiff(input_label, blob, reference.shape, float("nan"), float("nan"), checked,
                          "non-finite values")
    max_abs = float(np.max(np.abs(reference - merged)))
    magnitude = float(np.max(np.abs(reference)))
    max_rel = max_abs / magnitude if magnitude > 0 else (0.0 if max_abs == 0 else float("inf"))
    return OutputDiff(input_label, blob, reference.shape, max_abs, max_rel, checked,
                      "" if checked else "DetectionOutput, for information")


def blobs_to_compare(reference: Net, merged: Net):
    """(checked blobs, informational blobs); both must exist in the merged net."""
    checked, detections = checked_blobs(reference), detection_blobs(reference)
    available = merged.infer_shapes()
    missing = [b for b in checked + detections if b not in available]
    if missing:
        raise CaffessdError(f"the merged net lost blob '{missing[0]}'")
    return checked, detections


def diff_outputs(ref_out, new_out, checked, detections, input_label: str) -> List[OutputDiff]:
    rows = [difference(input_label, b, ref_out[b], new_out[b]) for b in checked]
    rows += [difference(input_label, b, ref_out[b], new_out[b], checked=False) for b in detections]
    return rows


def compare_nets(reference: Net, merged: Net, feeds: Dict[str, np.ndarray], input_label: str,
                 runner: Runner) -> List[OutputDiff]:
    """Run both nets once on `feeds` and compare the checked blobs."""
    checked, detections = blobs_to_compare(reference, merged)
    wanted = checked + detections
    return diff_outputs(runner(reference, wanted)(feeds), runner(merged, wanted)(feeds),
                        checked, detections, input_label)


def verify_fold(reference: Net, merged: Net, images: Sequence = (), tolerance: float = 1e-4, seed: int = 0,
                runner: Optional[Runner] = None,
                progress: Optional[Callable[[str], None]] = None) -> List[OutputDiff]:
    """Compare the nets on a seeded random input and each image; raise VerificationError
    if any checked blob differs by more than `tolerance` (relative)."""
    runner = runner or default_runner()
    if not reference.input_shapes():
        raise CaffessdError("the net declares no input (is this a train prototxt?); "
                            "give the deploy prototxt, or skip the check with --no-verify")
    runs = [(f"random (seed {seed})", lambda: random_feeds(reference, seed))]
    runs += [(os.fspath(path), lambda path=path: image_feeds(reference, path)) for path in images]
    checked, detections = blobs_to_compare(reference, merged)
    wanted = checked + detections
    run_reference, run_merged = runner(reference, wanted), runner(merged, wanted)
    rows: List[OutputDiff] = []
    for label, make_feeds in runs:
        feeds = make_feeds()
        rows += diff_outputs(run_reference(feeds), run_merged(feeds), checked, detections, label)
        if progress:
            progress(label)
    failed = [row for row in rows if not row.passes(tolerance)]
    if failed:
        worst = max(failed, key=lambda r: r.max_rel if np.isfinite(r.max_rel) else np.inf)
        raise VerificationError(
            f"merged net differs from the original: {worst.blob} on {worst.input} has max relative "
            f"difference {worst.max_rel:.3g} > tolerance {tolerance:g}; nothing written", rows)
    return rows


# ---------------------------------------------------------------- engines

def default_runner() -> Runner:
    """caffessd's own ONNX path (onnxruntime); run_opencv is the independent oracle the tests add."""
    return run_onnx_path


def run_onnx_path(net: Net, blobs: List[str]) -> Run:
    from caffessd.onnxconv import to_onnx
    from caffessd.inference.session import run_onnx

    extra = [b for b in blobs if b not in net.output_names()]
    model = to_onnx(net, extra_outputs=extra)

    def run(feeds):
        outputs = run_onnx(model, feeds)
        return {b: np.asarray(outputs[b]) for b in blobs}
    return run


def run_opencv(net: Net, blobs: List[str]) -> Run:
    """Load `net` into cv2.dnn with layer fusion off, so BatchNorm/Scale run as themselves."""
    import cv2


    prototxt = np.frombuffer(protoio.prototxt_text(net.param).encode("utf-8"), np.uint8)
    caffemodel = np.frombuffer(protoio.serialize(protoio.caffemodel_from(net.param, net.weights)), np.uint8)
    engine = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    engine.enableFusion(False)
    engine.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    known = set(engine.getLayerNames())
    layer_names = [_opencv_output_name(net, blob, known) for blob in blobs]

    def run(feeds):
        for name, value in feeds.items():
            engine.setInput(value, name)
        values = engine.forward(layer_names)
        return {blob: np.asarray(value) for blob, value in zip(blobs, values)}
    return run


def _opencv_output_name(net: Net, blob: str, known) -> str:
    """cv2.dnn names outputs by layer: the last layer that writes `blob`. Its
    Caffe importer names a layer after its top instead when that top is a net
    output, so fall back to the blob's name."""
    writer = None
    for layer in net.param.layer:
        if blob in layer.top:
            writer = (layer.name, list(layer.top).index(blob))
    if writer is None:
        raise CaffessdError(f"no layer writes blob '{blob}'")
    name, index = writer
    if name not in known and blob in known:
        name = blob
    return name if index == 0 else f"{name}.{index}"
