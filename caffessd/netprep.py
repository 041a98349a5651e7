"""Which preprocessing (mean, scale, channel order) a Caffe deploy net expects.

A deploy prototxt has no place for it, so wrong mean/scale is the most common
way to get nonsense from these nets. caffessd looks, in order, at:

1. its own note in the prototxt (caffessd.netnotes), which gen-model,
   convert-tf and merge-bn write:
       # caffessd: {"preprocessing": {"mean": [127.5, 127.5, 127.5], "scale": 0.007843, "channel_order": "BGR"}}
2. a train/test prototxt beside the deploy net (`*test*.prototxt`,
   `*train*.prototxt`, the one named like the deploy net first) whose
   AnnotatedData/Data/ImageData layer has a transform_param (Caffe's data
   layers decode with OpenCV, so BGR);
3. otherwise mean 0, scale 1, BGR, marked as assumed so callers can say so.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple

from caffessd.errors import CaffessdError, FormatError
from caffessd.netnotes import read_notes, with_notes
from caffessd import protoio

NOTE_KEY = "preprocessing"
TRANSFORMING_DATA_LAYERS = ("AnnotatedData", "Data", "ImageData", "WindowData")  # data layers with a transform_param
TF_MEAN, TF_SCALE = 127.5, 1 / 127.5       # TF Object Detection API / Keras MobileNets: x / 127.5 - 1


@dataclass(frozen=True)
class NetPreprocessing:
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    rgb: bool = False
    source: str = ""           # where it was found; "" when assumed

    @property
    def assumed(self) -> bool:
        return not self.source

    def describe(self) -> str:
        mean = _short(self.mean[0]) if len(set(self.mean)) == 1 else ",".join(_short(v) for v in self.mean)
        return f"mean {mean}, scale {_short(self.scale)}, {'RGB' if self.rgb else 'BGR'}"


def preprocessing_note(mean: Sequence[float], scale: float, rgb: bool = False) -> dict:
    """The note gen-model, convert-tf and merge-bn write (netnotes.with_notes)."""
    mean = [float(v) for v in mean]
    mean = mean * 3 if len(mean) == 1 else mean
    return {NOTE_KEY: {"mean": mean, "scale": float(scale), "channel_order": "RGB" if rgb else "BGR"}}


def with_preprocessing(text: str, mean: Sequence[float], scale: float, rgb: bool = False) -> str:
    """Prototxt `text` with the preprocessing note at the top (other notes kept)."""
    return with_notes(text, preprocessing_note(mean, scale, rgb))


def carry_notes(source_prototxt, text: str) -> str:
    """`text` (a net derived from `source_prototxt`, e.g. by merge-bn) with the
    source's caffessd notes, and its preprocessing recorded even when the source
    had it only from a train/test prototxt beside it (the copy may live elsewhere)."""
    notes = read_notes(source_prototxt)
    if NOTE_KEY not in notes:
        found = from_training_net(source_prototxt)
        if found is not None:
            notes.update(preprocessing_note(found.mean, found.scale, found.rgb))
    return with_notes(text, notes) if notes else text


def net_preprocessing(prototxt) -> NetPreprocessing:
    """What the deploy net `prototxt` expects (see the module docstring)."""
    return from_note(prototxt) or from_training_net(prototxt) or NetPreprocessing()


def from_note(prototxt) -> Optional[NetPreprocessing]:
    note = read_notes(prototxt).get(NOTE_KEY)
    if note is None:
        return None
    try:
        mean = [float(v) for v in (note["mean"] if isinstance(note["mean"], list) else [note["mean"]])]
        scale = float(note.get("scale", 1.0))
        order = str(note.get("channel_order", "BGR")).upper()
        valid = len(mean) in (1, 3) and all(map(math.isfinite, mean + [scale])) and order in ("BGR", "RGB")
    except (KeyError, TypeError, ValueError, AttributeError):
        valid = False
    if not valid:
        raise FormatError(prototxt, f"caffessd preprocessing note must hold mean (1 or 3 numbers), scale and "
                                    f"channel_order BGR or RGB, got {note!r}")
    return NetPreprocessing(tuple(mean * 3 if len(mean) == 1 else mean), scale, order == "RGB",
                            f"the caffessd note in {Path(prototxt).name}")


def from_training_net(prototxt) -> Optional[NetPreprocessing]:
    """The transform_param of the first train/test prototxt beside `prototxt`
    that has a usable one (mean_value and/or scale; mean_file is not used)."""
    for candidate in training_net_candidates(prototxt):
        found = _transform_of(candidate)
        if found is not None:
            mean, scale = found
            return NetPreprocessing(mean, scale, False, f"the transform_param of {candidate.name}")
    return None


def training_net_candidates(prototxt) -> Iterable[Path]:
    """Train/test prototxts in the deploy net's folder, the one named like it first
    (MobileNetSSD_deploy -> MobileNetSSD_test, MobileNetSSD_train), test before train."""
    prototxt = Path(prototxt)
    try:
        siblings = sorted(p for p in prototxt.parent.glob("*.prototxt") if p.resolve() != prototxt.resolve())
    except OSError:
        return []
    nets = [p for p in siblings if re.search(r"train|test", p.stem, re.I) and "solver" not in p.stem.lower()]
    twins = {re.sub("deploy", kind, prototxt.stem, flags=re.I) for kind in ("test", "train")} - {prototxt.stem}

    def rank(path: Path):
        return (path.stem not in twins, "test" not in path.stem.lower(), path.name)
    return sorted(nets, key=rank)


def _transform_of(path: Path) -> Optional[Tuple[Tuple[float, float, float], float]]:
    try:
        net = protoio.read_prototxt(path)
    except (CaffessdError, OSError):
        return None   # not a net (or unreadable): it was only a guess from the name
    layers = [layer for layer in net.layer if layer.type in TRANSFORMING_DATA_LAYERS and layer.HasField("transform_param")]
    # The TEST-phase layer is the one whose transform matches deployment.
    layers.sort(key=lambda layer: not any(rule.phase == 1 for rule in layer.include))
    for layer in layers:
        transform = layer.transform_param
        if transform.mean_file and not transform.mean_value:
            continue
        # Protobuf holds float32: 0.007843 reads back as 0.0078429999; keep the written digits.
        mean = [float(f"{v:.7g}") for v in transform.mean_value] or [0.0]
        if len(mean) not in (1, 3):
            continue
        return tuple(mean * 3 if len(mean) == 1 else mean), float(f"{transform.scale:.7g}")
    return None


def _short(value: float) -> str:
    return f"{value:.7g}"
