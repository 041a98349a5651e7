"""Choosing and ordering the classes a converted model predicts.

TF's class predictor has num_classes + 1 slots per anchor: slot 0 is the
background and slot k the label id k of the training label map (for the
model-zoo COCO models, COCO's category ids 1..90). A selection is a list of
TF slots, one per output class, in output order; background is always kept
as output class 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from caffessd.errors import CaffessdError, FormatError

# PASCAL VOC's 20 classes in their usual order, with the COCO category id of each.
VOC_FROM_COCO: List[Tuple[str, int]] = [
    ("aeroplane", 5), ("bicycle", 2), ("bird", 16), ("boat", 9), ("bottle", 44),
    ("bus", 6), ("car", 3), ("cat", 17), ("chair", 62), ("cow", 21),
    ("diningtable", 67), ("dog", 18), ("horse", 19), ("motorbike", 4), ("person", 1),
    ("pottedplant", 64), ("sheep", 20), ("sofa", 63), ("train", 7), ("tvmonitor", 72),
]


def class_selection(num_classes: int, classes: Optional[str] = None,
                    class_map: Optional[str] = None) -> Tuple[List[int], List[Optional[str]]]:
    """(TF slot per output class incl. background at 0, output class names)."""
    if classes and class_map:
        raise CaffessdError("give --classes or --class-map, not both")
    if classes is None and class_map is None:
        return list(range(num_classes + 1)), [None] * (num_classes + 1)
    if classes is not None:
        if classes.lower() != "voc":
            raise CaffessdError(f"--classes knows only 'voc' (COCO to PASCAL VOC), got {classes!r}")
        if num_classes != 90:
            raise CaffessdError(f"--classes voc needs a COCO model (90 classes), this one has {num_classes}")
        pairs = VOC_FROM_COCO
    else:
        pairs = read_class_map(class_map)
    slots = [0]
    names: List[Optional[str]] = ["background"]
    for name, slot in pairs:
        if not 1 <= slot <= num_classes:
            raise CaffessdError(f"class '{name}' maps to TF class {slot}, but the model has "
                                f"classes 1..{num_classes}")
        slots.append(slot)
        names.append(name)
    if len(set(slots)) != len(slots):
        raise CaffessdError("the class map uses a TF class twice")
    return slots, names


def read_class_map(path) -> List[Tuple[str, int]]:
    """Lines 'TF_ID [name]' (or 'name: TF_ID'), in the output order; '#' comments."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "no such file")
    pairs = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" in line:
            name, _, ident = line.rpartition(":")
        else:
            ident, _, name = line.partition(" ")
        try:
            slot = int(ident.strip())
        except ValueError:
            raise FormatError(path, f"expected 'TF_ID [name]' or 'name: TF_ID', got {raw.strip()!r}",
                              number) from None
        pairs.append((name.strip() or f"class_{slot}", slot))
    if not pairs:
        raise FormatError(path, "lists no classes")
    return pairs


def labelmap_text(names: List[Optional[str]]) -> Optional[str]:
    """A Caffe SSD labelmap.prototxt for the output classes, when they have names."""
    if any(n is None for n in names):
        return None
    items = []
    for label, name in enumerate(names):
        items.append(f'item {{\n  name: "{name}"\n  label: {label}\n  display_name: "{name}"\n}}\n')
    return "".join(items)
