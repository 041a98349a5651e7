"""ImageRecord <-> AnnotatedDatum, field for field as the SSD fork's
ReadRichImageToAnnotatedDatum / ReadXMLToAnnotatedDatum write them:
type BBOX; datum label -1; one AnnotationGroup per label in order of first
appearance; instance_id counting 0, 1, ... within a group; each box divided
by the annotation's image size in float32 (C++ `float / int`); `difficult`
on every box."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence, Tuple

import numpy as np

from caffessd import caffe_pb2
from caffessd.datasets.records import BoxObject, ImageRecord
from caffessd.datasets.images import decode_image
from caffessd.errors import FormatError


def normalise(value: float, size: int) -> float:
    return float(np.float32(value) / np.float32(size))


def add_annotations(datum: caffe_pb2.AnnotatedDatum, objects: Sequence[Tuple[int, BoxObject]],
                    width: int, height: int) -> None:
    """Append (label id, object) pairs as AnnotationGroups of `datum`."""
    groups = {}
    for label, obj in objects:
        group = groups.get(label)
        if group is None:
            group = groups[label] = datum.annotation_group.add()
            group.group_label = label
        annotation = group.annotation.add()
        annotation.instance_id = len(group.annotation) - 1
        xmin, ymin, xmax, ymax = obj.box
        bbox = annotation.bbox
        bbox.xmin, bbox.xmax = normalise(xmin, width), normalise(xmax, width)
        bbox.ymin, bbox.ymax = normalise(ymin, height), normalise(ymax, height)
        bbox.difficult = obj.difficult


def new_annotated_datum(data: bytes, channels: int, width: int, height: int, encoded: bool) -> caffe_pb2.AnnotatedDatum:
    datum = caffe_pb2.AnnotatedDatum()
    datum.type = caffe_pb2.AnnotatedDatum.BBOX
    image = datum.datum
    image.channels, image.height, image.width = channels, height, width
    image.data = data
    image.label = -1
    image.encoded = encoded
    return datum


def record_from_datum(datum: caffe_pb2.AnnotatedDatum, name: str, names: Mapping[int, str],
                      source: Path, key: str) -> ImageRecord:
    """The ImageRecord an AnnotatedDatum stands for: boxes back in pixels of
    the stored image, labels named through `names` (the id as text when absent)."""
    width, height = datum.datum.width, datum.datum.height
    objects = []
    for group in datum.annotation_group:
        label = names.get(group.group_label, str(group.group_label))
        for annotation in group.annotation:
            b = annotation.bbox
            objects.append(BoxObject(label=label, box=(b.xmin * width, b.ymin * height, b.xmax * width, b.ymax * height),
                                     difficult=b.difficult, attributes={"instance_id": annotation.instance_id,
                                                                        "label_id": group.group_label}))
    return ImageRecord(name=name, path=source / key, width=width, height=height, objects=tuple(objects),
                       annotation=source, image_id=key)


def datum_pixels(datum: caffe_pb2.Datum, key: str = None) -> np.ndarray:
    """A Datum's image as HxWx3 BGR (HxW for 1 channel) uint8."""
    if datum.encoded:
        return decode_image(datum.data, key, gray=datum.channels == 1)
    expected = datum.channels * datum.height * datum.width
    if len(datum.data) != expected:
        raise FormatError(key, f"raw datum holds {len(datum.data)} bytes, expected {expected}")
    planar = np.frombuffer(datum.data, np.uint8).reshape(datum.channels, datum.height, datum.width)
    pixels = planar.transpose(1, 2, 0)
    return np.ascontiguousarray(pixels[:, :, 0] if datum.channels == 1 else pixels)
