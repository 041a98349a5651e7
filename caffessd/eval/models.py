"""Which model(s) to evaluate and what their class ids mean.

A model is a Detector, an exported file (ONNX, OpenVINO IR, ncnn, TFLite), or
a (deploy prototxt, caffemodel) pair;
its label ids are named by --labelmap, else by the model's own labels (ONNX
metadata), else in order after background by the dataset's classes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Union

from caffessd.errors import CaffessdError, FormatError
from caffessd.protoio import read_labelmap, read_prototxt

if TYPE_CHECKING:   # the annotation only: the inference layer is imported where a model is loaded
    from caffessd.inference.detector import Detector

ModelArg = Union["Detector", str, Path, tuple]


@dataclass
class LoadedModel:
    name: str
    detector: object               # caffessd.inference.detector.Detector (any engine)
    label_names: Dict[int, str]    # label id -> dataset class name
    source: str


def load_detector(model: ModelArg, threshold: float, threads: Optional[int] = None, engine: Optional[str] = None,
                  device: Optional[str] = None, precision: Optional[str] = None):
    """(Detector, source name) for a model argument: None (the embedded face
    detector), a Detector, a (prototxt, caffemodel) pair, or an exported file
    of any engine (.onnx, OpenVINO .xml, ncnn .param, .tflite; `engine` names
    the runtime when the file type is not enough)."""
    from caffessd.inference.detector import Detector

    options = {"threads": threads, "engine": engine, "device": device, "precision": precision}
    if model is None:   # the embedded face detector, with its labels
        detector = Detector(threshold=threshold, **options)
        return detector, "yufacedetectnet (embedded)"
    if isinstance(model, Detector):
        model.threshold = threshold
        return model, str(model.onnx_path)
    if isinstance(model, (tuple, list)):
        prototxt, weights = model
        return Detector(prototxt, weights, threshold=threshold, **options), f"{prototxt} + {weights}"
    path = Path(model)
    if not path.exists():
        raise FormatError(path, "no such model file")
    if path.suffix.lower() in (".prototxt", ".caffemodel"):
        raise FormatError(path, "is part of a Caffe model; give it as (deploy prototxt, caffemodel) "
                                "(--model/--weights on the command line)")
    return Detector(artifact=path, threshold=threshold, **options), str(path)


def caffe_num_classes(prototxt) -> Optional[int]:
    """DetectionOutput's num_classes in a deploy prototxt."""
    for layer in read_prototxt(prototxt).layer:
        if layer.type == "DetectionOutput":
            return int(layer.detection_output_param.num_classes)
    return None


def model_num_classes(model, detector) -> Optional[int]:
    """Classes the model scores, background included, where it says: a Caffe
    net's DetectionOutput, else the labels an ONNX export (or the embedded
    model) carries."""
    if isinstance(model, (tuple, list)):
        return caffe_num_classes(model[0])
    return len(detector.labels) if detector.labels else None


def name_labels(detector, dataset_classes: Sequence[str], labelmap: Optional[Path],
                num_classes: Optional[int], model_name: str) -> Dict[int, str]:
    """label id -> dataset class name, checked against the dataset's classes."""
    known = set(dataset_classes)
    if labelmap is not None:
        names = {}
        for item in read_labelmap(labelmap).item:
            names[item.label] = item.name if item.name in known or not item.display_name else item.display_name
        source = str(labelmap)
    elif detector.labels:
        names, source = dict(detector.labels), "the model's labels"
    else:
        names = {i + 1: name for i, name in enumerate(dataset_classes)}
        names[0] = "background"
        source = None
    if num_classes is not None and source is not None and len(names) != num_classes:
        raise CaffessdError(f"{model_name}: the model has {num_classes} classes (background included) but "
                            f"{source} names {len(names)}")
    if num_classes is not None and source is None and num_classes != len(dataset_classes) + 1:
        raise CaffessdError(f"{model_name}: the model has {num_classes} classes (background included) but the "
                            f"dataset has {len(dataset_classes)} + background; give --labelmap to name its classes")
    foreground = {label: name for label, name in names.items() if label != 0 and name != "background"}
    missing = sorted(known - set(foreground.values()))
    if missing and source is not None:
        raise CaffessdError(f"{model_name}: the dataset's class {missing[0]!r} is not among the model's classes "
                            f"from {source} ({', '.join(list(foreground.values())[:6])}...)")
    return foreground


def model_names(sources: Sequence[str]) -> List[str]:
    """Short unique names for the report (file stems, numbered on clashes)."""
    stems = [Path(s.split(" + ")[-1]).stem if "embedded" not in s else "yufacedetectnet" for s in sources]
    out = []
    for index, stem in enumerate(stems):
        out.append(stem if stems.count(stem) == 1 else f"{stem}-{index + 1}")
    return out
