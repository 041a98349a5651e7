"""Inference with onnxruntime: `Detector(...)(image) -> [Detection, ...]`.

A Caffe model (deploy prototxt + caffemodel) is converted to ONNX once and
cached by content hash, so later runs load the ONNX file directly. An ONNX
file exported by caffessd carries its preprocessing and labels as metadata.

    from caffessd import Detector
    detector = Detector()                           # embedded face detector
    for det in detector("photo.jpg"):
        print(det.name, det.score, det.box)
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from caffessd import __version__
from caffessd.errors import CaffessdError, FormatError
from caffessd.image.preprocess import Preprocessing, load_image, make_blob, resize_linear
from caffessd.inference.engines import IMAGE, engine_class, engine_for_path, open_engine
from caffessd.inference.engines.base import SERIAL
from caffessd.util.files import read_bytes
from caffessd.resources import bundled
from caffessd.net import Net
from caffessd.netprep import net_preprocessing


@dataclass
class Detection:
    label: int
    name: str
    score: float
    box: Tuple[float, float, float, float]          # xmin, ymin, xmax, ymax in pixels
    box_normalized: Tuple[float, float, float, float]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["box"] = [round(v, 2) for v in self.box]
        data["box_normalized"] = [round(v, 6) for v in self.box_normalized]
        data["score"] = round(self.score, 6)
        return data


@dataclass
class ModelSpec:
    """A Caffe model plus what the deploy prototxt does not say."""

    prototxt: Path
    caffemodel: Path
    preprocessing: Optional[Preprocessing] = None
    labels: Optional[Dict[int, str]] = None


def default_model() -> ModelSpec:
    """The embedded YuFaceDetectNet (BSD-3-Clause, models/yufacedetectnet)."""
    return ModelSpec(
        prototxt=bundled("yufacedetectnet", "yufacedetectnet-open-v2.prototxt"),
        caffemodel=bundled("yufacedetectnet", "yufacedetectnet-open-v2.caffemodel"),
        # Trained on raw BGR pixels: no mean, no scaling.
        preprocessing=Preprocessing(width=320, height=240, mean=(0.0, 0.0, 0.0), scale=1.0),
        labels={0: "background", 1: "face"},
    )


def sample_image() -> Path:
    return bundled("yufacedetectnet", "keliamoniz1.jpg")


def cache_dir() -> Path:
    if os.environ.get("CAFFESSD_CACHE"):
        return Path(os.environ["CAFFESSD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "caffessd"


def source_digest(prototxt: Path, caffemodel: Path, extra: str = "") -> str:
    """SHA-256 of the model files and everything that shapes the conversion."""
    digest = hashlib.sha256()
    for part in (read_bytes(prototxt), read_bytes(caffemodel), __version__.encode(), extra.encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def model_key(prototxt: Path, caffemodel: Path, extra: str = "") -> str:
    """Content hash of the model files and everything that shapes the conversion (a cache entry's name)."""
    return source_digest(prototxt, caffemodel, extra)[:20]


SOURCE_KEY = "source_sha256"  # metadata of a cached conversion: the source_digest it was made from


def convert_cached(spec: ModelSpec, directory: Optional[Path] = None, batch: int = 1) -> Tuple[Optional[Path], bool]:
    """ONNX file for `spec`, converting only when no sound cached copy exists.
    `batch` > 1 converts for that many images per run (caffessd.inference.batching).

    Returns (path, converted_now); path is None when the cache folder could
    not be written and the model was converted in memory (see cached_model)."""
    entry = cached_model(spec, directory, batch)
    return entry.path, entry.converted


def cached_model(spec: ModelSpec, directory: Optional[Path] = None, batch: int = 1):
    """caffessd.inference.model_cache.CachedModel for `spec`: verified by checksum when
    read from the cache; converted, run once in onnxruntime, then cached."""
    from caffessd.inference import model_cache as modelcache
    from caffessd.onnxconv import read_metadata

    metadata = spec.preprocessing.to_metadata() if spec.preprocessing else {}
    if spec.labels:
        metadata["labels"] = {str(k): v for k, v in sorted(spec.labels.items())}
    batch_tag = f"batch{batch}" if batch > 1 else ""
    source = source_digest(spec.prototxt, spec.caffemodel, json.dumps(metadata, sort_keys=True) + batch_tag)
    directory = Path(directory) if directory else cache_dir()
    target = directory / f"{Path(spec.prototxt).stem}{f'-b{batch}' if batch > 1 else ''}-{source[:20]}.onnx"

    def build() -> bytes:
        from caffessd.onnxconv import to_onnx

        net = Net.load(spec.prototxt, spec.caffemodel)
        if not any(layer.type == "DetectionOutput" for layer in net.layers):
            raise FormatError(spec.prototxt, "has no DetectionOutput layer; detection needs an SSD deploy net")
        return to_onnx(net, metadata={**metadata, SOURCE_KEY: source},
                       input_shapes=_batch_shape(net, batch)).SerializeToString()

    def belongs(data: bytes):
        """Why a checksum-sound entry is not this conversion (None when it is)."""
        try:
            recorded = read_metadata(_parse_onnx(data, target)).get(SOURCE_KEY)
        except FormatError:
            return "not an ONNX model"
        return None if recorded == source else "made from other files than this model's"

    return modelcache.cached(target, build, lambda data: run_once(data, spec.prototxt), belongs)


def run_once(model: bytes, source) -> None:
    """Load `model` in onnxruntime and run it on zeros; FormatError naming
    `source` when either fails (so no such model gets cached)."""
    from caffessd.inference.session import onnx_session

    try:
        session = onnx_session(model, 1)
        feeds = {i.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in i.shape], np.float32)
                 for i in session.get_inputs()}
        session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        text = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise FormatError(source, f"the converted model fails in onnxruntime: {text[:300]}") from None


def _batch_shape(net, batch: int):
    """The net's input shape with `batch` images (None: as declared)."""
    if batch <= 1:
        return None
    shapes = list(net.input_shapes().values())
    return (batch, *shapes[0][1:]) if shapes else None


class Detector:
    """Runs an SSD detector on any engine caffessd has (caffessd.inference.engines).

    Give a Caffe model (`prototxt` + `weights`), an exported artifact
    (`artifact`: .onnx, an OpenVINO .xml, an ncnn .param, a .tflite file;
    `onnx_path` is the same argument under its older name), or nothing for
    the embedded face detector. `engine` names the runtime (default: by the
    artifact's file type; onnxruntime for Caffe models, which are converted
    to ONNX once and cached), `device` and `precision` are the engine's
    (`--device cuda|tensorrt` on onnxruntime, `--precision bf16` on
    OpenVINO). `threshold` drops detections with a lower score. `batch`
    (Caffe models) converts for that many images per run, for `detect_many`.
    `workload` ("serial" or "pipelined", Engine.set_workload) tunes the
    engine's threads from the start for what comes: detect_many and eval
    switch it themselves, which for onnxruntime makes its session again.

    Every engine gets the same pictures (OpenCV-exact resize, the model's
    mean, scale and channel order), and its DetectionOutput rows become the
    same Detection objects, so results differ only by what the engine computes.
    """

    def __init__(self, prototxt=None, weights=None, *, onnx_path=None, artifact=None, engine: Optional[str] = None,
                 device: Optional[str] = None, precision: Optional[str] = None,
                 labels: Optional[Dict[int, str]] = None, preprocessing: Optional[Preprocessing] = None,
                 threshold: float = 0.5, cache: Optional[Path] = None, threads: Optional[int] = None, batch: int = 1,
                 workload: str = SERIAL):
        self.threshold = threshold
        self.converted = False
        artifact = artifact if artifact is not None else onnx_path
        cache_root = Path(cache) if cache else cache_dir()
        if artifact is None:
            spec = self._spec(prototxt, weights, labels, preprocessing)
            entry = cached_model(spec, cache, batch)
            self.converted = entry.converted
            self.onnx_path = entry.path  # None: converted in memory only
            self.engine = _open_converted(entry, spec.prototxt, engine, threads, device, precision, cache_root,
                                          workload)
        else:
            self.onnx_path = Path(artifact)
            self.engine = _open_artifact(self.onnx_path, engine, threads, device, precision, cache_root, workload)
        metadata = self.engine.metadata
        require_detection_output(metadata, self.onnx_path)
        if "image_input" in metadata:
            raise FormatError(self.onnx_path, "was exported with --image-input: it takes the image itself, so run "
                                              "it with onnxruntime directly (detect needs the blob-input export)")
        output_shape = getattr(self.engine, "output_shape", None)
        rows_of = output_shape[-1] if output_shape else None  # None or a name when not fixed
        if isinstance(rows_of, int) and rows_of != 7:
            raise FormatError(self.onnx_path, f"is not an SSD detector: its output has shape {output_shape}, "
                                              "not DetectionOutput rows of 7 (exported with --raw?)")
        self.preprocessing = self._preprocessing(preprocessing, metadata)
        self.labels = labels or {int(k): v for k, v in metadata.get("labels", {}).items()}

    @property
    def artifact(self) -> Optional[Path]:
        """The model file the engine runs (None: a conversion held in memory)."""
        return self.onnx_path

    @property
    def session(self):
        """The onnxruntime InferenceSession (onnxruntime engine only)."""
        return self.engine.session

    @property
    def input_name(self) -> str:
        return self.engine.input_name

    @property
    def output_name(self) -> str:
        return self.engine.output_name

    @staticmethod
    def _spec(prototxt, weights, labels, preprocessing) -> ModelSpec:
        if prototxt is None and weights is None:
            spec = default_model()
        elif prototxt is None or weights is None:
            raise CaffessdError("a Caffe model needs both the deploy prototxt and the caffemodel")
        else:
            spec = ModelSpec(Path(prototxt), Path(weights))
        if preprocessing is not None:
            spec.preprocessing = preprocessing
        if spec.preprocessing is None:
            spec.preprocessing = preprocessing_for_net(spec.prototxt)
        if labels:
            spec.labels = labels
        return spec

    def _preprocessing(self, given: Optional[Preprocessing], metadata: dict) -> Preprocessing:
        """`given`, else the model's own. An engine that normalises in its own
        graph (IMAGE input) cannot take other values than those it was built with."""
        stored = self._stored_preprocessing(metadata)
        if given is None:
            return stored
        if self.engine.input_format == IMAGE and given != stored:
            raise FormatError(self.onnx_path, "normalises pictures inside its graph (mean, scale and channel order "
                                              "fixed at export); other preprocessing needs a new export")
        return given

    def _stored_preprocessing(self, metadata: dict) -> Preprocessing:
        if "input_size" in metadata:
            return Preprocessing.from_metadata(metadata)
        shape = getattr(self.engine, "input_shape", None) or []
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
            raise FormatError(self.onnx_path, "input size unknown: no caffessd metadata and no fixed input shape")
        return Preprocessing(width=shape[3], height=shape[2])

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One BGR image as the engine's input for a batch of one: the float
        blob (make_blob), or for an engine that normalises in its graph the
        picture resized to the net's size (uint8 1xHxWx3 BGR), the same
        OpenCV-exact resize either way."""
        if self.engine.input_format == IMAGE:
            prep = self.preprocessing
            if image.shape[0] != prep.height or image.shape[1] != prep.width:
                image = resize_linear(image, prep.width, prep.height)
            return np.ascontiguousarray(image)[None]
        return make_blob(image, self.preprocessing)

    def run_blob(self, blob: np.ndarray) -> np.ndarray:
        """The raw DetectionOutput rows (N x 7) for one prepared input (`prepare`)."""
        return self.engine.run(blob)

    def __call__(self, image: Union[str, os.PathLike, np.ndarray]) -> List[Detection]:
        bgr = load_image(image) if not isinstance(image, np.ndarray) else image
        rows = self.run_blob(self.prepare(bgr))
        return self.to_detections(rows, bgr.shape[1], bgr.shape[0])

    def detect_many(self, images, batch: Optional[int] = None, workers: int = 2, load=None, streams: int = 1):
        """Yield caffessd.inference.batching.ImageResult per image, in order:
        decoding on `workers` threads overlaps inference, `batch` images per run
        (the model's batch size, see export-onnx --batch), `streams` runs at
        once (fastest over folders: a Detector made with threads=1, streams =
        the number of cores)."""
        from caffessd.inference.batching import detect_many

        return detect_many(self, images, batch=batch, workers=workers, streams=streams,
                           **({"load": load} if load else {}))

    def to_detections(self, rows: np.ndarray, width: int, height: int) -> List[Detection]:
        detections = []
        for _, label, score, *box in rows:
            # An empty result is one padding row: all -1 in Caffe, all 0 in the
            # ONNX export (as in OpenCV 4.x); neither is a detection.
            if label < 0 or score <= 0 or score < self.threshold:
                continue
            norm = tuple(float(min(max(v, 0.0), 1.0)) for v in box)
            pixels = (norm[0] * width, norm[1] * height, norm[2] * width, norm[3] * height)
            label = int(label)
            detections.append(Detection(label, self.labels.get(label, str(label)), float(score), pixels, norm))
        return detections


def _open_artifact(path: Path, engine: Optional[str], threads, device, precision, cache_root: Path,
                   workload: str = SERIAL):
    """The engine for an exported file: named, or chosen by its suffix.
    onnxruntime keeps its optimised graph in the cache (caffessd.inference.session)."""
    if not path.exists():
        raise FormatError(path, "no such model file")
    chosen = engine_class(engine) if engine else engine_for_path(path)
    if chosen.name == "onnxruntime":
        from caffessd.inference.session import optimized_cache_path
        from caffessd.onnxconv.metadata import load_model

        model = load_model(path)
        return chosen.from_model(model, path, threads, device, precision,
                                 optimized_cache_path(path, cache_root), cache=cache_root, workload=workload)
    return _tuned(open_engine(path, chosen.name, threads, device, precision), workload)


def _open_converted(entry, source: Path, engine: Optional[str], threads, device, precision, cache_root: Path,
                    workload: str = SERIAL):
    """The engine for a Caffe model's cached ONNX conversion (`entry`, a
    caffessd.inference.model_cache.CachedModel). Engines that read ONNX take it; the
    others need their own export."""
    chosen = engine_class(engine or "onnxruntime")
    if chosen.name == "onnxruntime":
        from caffessd.inference.session import optimized_cache_path

        model = _parse_onnx(entry.data, entry.path or source)
        optimized = optimized_cache_path(entry.path, cache_root) if entry.path else None
        return chosen.from_model(model, entry.path, threads, device, precision, optimized, cache=cache_root,
                                 workload=workload)
    if ".onnx" not in chosen.suffixes + chosen.also_opens:
        raise CaffessdError(f"the {chosen.name} engine runs its own files ({', '.join(chosen.suffixes)}), not a "
                            f"Caffe model: export it first (caffessd export-{chosen.name}), then give that file")
    if entry.path is not None:
        return _tuned(chosen.open(entry.path, threads=threads, device=device, precision=precision), workload)
    return _tuned(chosen.from_onnx_bytes(entry.data, source, threads=threads, device=device, precision=precision),
                  workload)


def _tuned(engine, workload: str):
    engine.set_workload(workload)
    return engine


def require_detection_output(metadata: dict, source) -> None:
    """Only caffessd's own full exports are trusted to end in DetectionOutput
    rows: a foreign model whose output merely has the name `detection_out`
    would run and silently report nothing."""
    if metadata.get("kind") == "raw":
        raise FormatError(source, "is not an SSD detector: it was exported with --raw (loc, conf and priors, "
                                  "no DetectionOutput)")
    if "detection_output" not in metadata:
        raise FormatError(source, "is not an SSD detector made by caffessd: it has no caffessd.detection_output "
                                  "metadata, so its outputs are not known to be DetectionOutput rows (export it "
                                  "with `caffessd export-onnx`)")


def _parse_onnx(data: bytes, source):
    import onnx

    try:
        return onnx.load_from_string(data)
    except Exception as exc:  # DecodeError and others
        raise FormatError(source, f"not an ONNX model ({exc.__class__.__name__})") from None


def preprocessing_for_net(prototxt) -> Preprocessing:
    """The preprocessing a deploy net expects: its input size, and mean, scale and
    channel order from its caffessd note or a train/test prototxt beside it,
    else mean 0, scale 1, BGR (caffessd.netprep.net_preprocessing)."""
    shapes = list(Net.load(prototxt).input_shapes().values())
    if not shapes or len(shapes[0]) != 4:
        raise FormatError(prototxt, "cannot tell the input size: no 4-d input shape")
    own = net_preprocessing(prototxt)
    return Preprocessing(width=int(shapes[0][3]), height=int(shapes[0][2]), mean=own.mean, scale=own.scale,
                         rgb=own.rgb)
