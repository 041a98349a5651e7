"""The AnnotatedData layer as a tf.data pipeline (the `tf` extra).

`build_input(layer)` reads the LMDB of AnnotatedDatum records that
convert_annoset / `caffessd make-lmdb` write and yields Caffe's two tops per
batch: images float32 [N, 3, H, W] (BGR, (pixel - mean) * scale) and ground
truth float32 [M, 8] rows (item_id, label, instance_id, xmin, ymin, xmax,
ymax, difficult), normalised; a batch without any box gives the single row
of -1 that AnnotatedDataLayer writes then.

Per image, in the fork's order (annotated_data_layer.cpp load_batch):
distort_param -> expand_param -> batch_sampler crops -> Transform (resize,
crop, mirror, mean/scale); see caffessd.train.augment. Each image's random
draws come from a stateless seed made of (seed, its position in the
stream), so a pipeline is reproducible whatever num_parallel_calls does.

Differences from Caffe, on purpose: the fork re-encodes the image as JPEG
after each of distortion, expansion and cropping (a side effect of storing
intermediate results in a Datum); here images stay uint8 arrays between
steps. Reading order: Caffe reads the LMDB sequentially; in TRAIN this
pipeline shuffles with the seed (each epoch anew), in TEST it keeps the
LMDB order. Images are decoded as 3-channel colour.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from caffessd import caffe_pb2
from caffessd.datasets.lmdb_reader import lmdb_errors
from caffessd.errors import CaffessdError, FormatError
from caffessd.util.lmdb_check import open_checked

from caffessd.train.sources import resolve_source
from caffessd.train.tfimport import tensorflow

tf = tensorflow()  # quietly, or a CaffessdError naming the extra (before the augment modules import it)

from caffessd.train.augment.boxes import Annotations
from caffessd.train.augment.distort import DistortParams, apply_distort
from caffessd.train.augment.expand import ExpandParams, apply_expand, fill_values
from caffessd.train.augment.random import fold
from caffessd.train.augment.resize import ResizeParams
from caffessd.train.augment.sample import SamplerParams, apply_samplers
from caffessd.train.augment.transform import TransformParams, apply_transform

EMPTY_BATCH_ROW = (-1.0,) * 8


@dataclass(frozen=True)
class InputConfig:
    """What an AnnotatedData layer asks for, checked and in plain values."""

    source: str
    batch_size: int
    transform: TransformParams
    distort: Optional[DistortParams]
    expand: Optional[ExpandParams]
    samplers: Tuple[SamplerParams, ...]
    fill: Tuple[int, int, int]

    @property
    def output_size(self) -> Optional[Tuple[int, int]]:
        """(height, width) of every image, or None when it varies."""
        t = self.transform
        if t.crop_h and t.crop_w:
            return t.crop_h, t.crop_w
        if t.resize is not None and t.resize.resize_mode != "FIT_SMALL_SIZE":
            return t.resize.height, t.resize.width
        return None


def _layer_error(layer, message: str) -> CaffessdError:
    return CaffessdError(f"layer '{layer.name}': {message}")


def parse_layer(layer: caffe_pb2.LayerParameter, phase: str = "TRAIN") -> InputConfig:
    """Read and check an AnnotatedData layer's parameters."""
    if layer.type != "AnnotatedData":
        raise _layer_error(layer, f"type is '{layer.type}', expected 'AnnotatedData'")
    data = layer.data_param
    if not data.source:
        raise _layer_error(layer, "data_param has no source")
    if data.backend != caffe_pb2.DataParameter.LMDB:
        raise _layer_error(layer, "only backend: LMDB is supported")
    if data.batch_size < 1:
        raise _layer_error(layer, "data_param.batch_size must be at least 1")
    tp = layer.transform_param
    if tp.mean_file:
        raise _layer_error(layer, "transform_param.mean_file is not supported; use mean_value")
    if tp.HasField("noise_param"):
        raise _layer_error(layer, "transform_param.noise_param is not supported")
    if tp.force_gray:
        raise _layer_error(layer, "transform_param.force_gray is not supported (images are decoded in colour)")
    means = list(tp.mean_value)
    if len(means) not in (0, 1, 3):
        raise _layer_error(layer, f"mean_value needs 1 or 3 values, got {len(means)}")
    mean = tuple(means * 3 if len(means) == 1 else means) if means else (0.0, 0.0, 0.0)
    resize = None
    if tp.HasField("resize_param"):
        resize = ResizeParams.from_proto(tp.resize_param)
        if resize.height <= 0 or resize.width <= 0:
            raise _layer_error(layer, "resize_param needs height and width > 0")
        if resize.resize_mode == "FIT_SMALL_SIZE" and data.batch_size != 1:
            raise _layer_error(layer, "FIT_SMALL_SIZE needs batch_size 1 (as in the SSD fork)")
        if len(resize.pad_value) not in (0, 1, 3):
            raise _layer_error(layer, "pad_value needs 1 or 3 values")
    crop_h, crop_w = (tp.crop_size, tp.crop_size) if tp.crop_size else (tp.crop_h, tp.crop_w)
    emit = None
    if tp.HasField("emit_constraint"):
        ec = tp.emit_constraint
        emit = (caffe_pb2.EmitConstraint.EmitType.Name(ec.emit_type), ec.emit_overlap)
    expand = None
    if tp.HasField("expand_param"):
        expand = ExpandParams.from_proto(tp.expand_param)
        if expand.max_expand_ratio <= 1.0:
            raise _layer_error(layer, "expand_param.max_expand_ratio must be > 1")
    samplers = []
    for batch_sampler in layer.annotated_data_param.batch_sampler:
        if not batch_sampler.use_original_image:
            continue  # GenerateBatchSamples only uses samplers on the original image
        params = SamplerParams.from_proto(batch_sampler)
        problem = params.check()
        if problem:
            raise _layer_error(layer, problem)
        samplers.append(params)
    transform = TransformParams(mean=mean, scale=tp.scale, mirror=tp.mirror, crop_h=crop_h, crop_w=crop_w,
                                resize=resize, emit=emit, train=phase.upper() == "TRAIN")
    return InputConfig(source=data.source, batch_size=data.batch_size, transform=transform,
                       distort=DistortParams.from_proto(tp.distort_param) if tp.HasField("distort_param") else None,
                       expand=expand, samplers=tuple(samplers), fill=fill_values(means))


# ------------------------------------------------------------------ one image

def augment(image, boxes, extra, config: InputConfig, seed):
    """The whole per-image chain: uint8 BGR [H, W, 3], boxes [K, 4], extra
    [K, 3] (label, instance_id, difficult) -> (float32 [3, h, w], rows [K', 7]
    as (label, instance_id, xmin, ymin, xmax, ymax, difficult))."""
    annotations = Annotations(tf.reshape(boxes, [-1, 4]), tf.reshape(extra, [-1, 3]))
    emit = config.transform.emit
    if config.distort is not None:
        image = apply_distort(image, config.distort, fold(seed, 1))
    if config.expand is not None:
        image, annotations = apply_expand(image, annotations, config.expand, fold(seed, 2), config.fill, emit)
    image, annotations = apply_samplers(image, annotations, config.samplers, fold(seed, 3), emit)
    blob, annotations = apply_transform(image, annotations, config.transform, fold(seed, 4))
    size = config.output_size
    if size is not None:
        blob = tf.ensure_shape(blob, [3, size[0], size[1]])
    e = annotations.extra
    rows = tf.concat([e[:, :2], annotations.boxes, e[:, 2:]], axis=1)
    return blob, rows


# ------------------------------------------------------------------ the LMDB

_ENVIRONMENTS: dict = {}


def _open_environment(path: Path):
    """One read-only environment per database and process (LMDB refuses to
    open the same one twice in a process)."""
    key = os.path.realpath(path)
    env = _ENVIRONMENTS.get(key)
    if env is None:
        # Walked first: a truncated or corrupt data.mdb is one error line, not a SIGBUS.
        env = open_checked(path, max_readers=256)
        _ENVIRONMENTS[key] = env
    return env


class LmdbRecords:
    """Random access to an LMDB's AnnotatedDatum values by position."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FormatError(self.path, "no such LMDB (data_param.source)")
        self.env = _open_environment(self.path)
        with self._errors(), self.env.begin() as txn:
            self.keys = list(txn.cursor().iternext(keys=True, values=False))  # keys only: no image bytes read
        if not self.keys:
            raise FormatError(self.path, "the LMDB has no entries")

    def __len__(self) -> int:
        return len(self.keys)

    def _errors(self, key: Optional[bytes] = None):
        return lmdb_errors(self.path, key.decode("utf-8", "replace") if key is not None else None)

    def raw(self, index: int) -> bytes:
        key = self.keys[index]
        with self._errors(key), self.env.begin() as txn:
            value = txn.get(key)
        if value is None:
            raise FormatError(self.path, f"entry {key!r} vanished while training (was the LMDB rewritten?)")
        return value

    def parse(self, index: int):
        """(image bytes, encoded, (c, h, w), boxes [K, 4] f32, extra [K, 3] f32)."""
        key = self.keys[index]
        datum = caffe_pb2.AnnotatedDatum()
        try:
            datum.ParseFromString(self.raw(index))
        except Exception as exc:  # protobuf raises DecodeError or others by implementation
            raise FormatError(self.path, f"entry {key!r} is not an AnnotatedDatum ({exc})") from None
        if datum.type != caffe_pb2.AnnotatedDatum.BBOX:
            raise FormatError(self.path, f"entry {key!r} has annotation type {datum.type}, expected BBOX")
        boxes, extra = [], []
        for group in datum.annotation_group:
            for annotation in group.annotation:
                b = annotation.bbox
                boxes.append((b.xmin, b.ymin, b.xmax, b.ymax))
                extra.append((group.group_label, annotation.instance_id, float(b.difficult)))
        d = datum.datum
        if not d.encoded and len(d.data) != d.channels * d.height * d.width:
            raise FormatError(self.path, f"entry {key!r}: raw data size does not match its shape")
        return (d.data, d.encoded, np.array([d.channels, d.height, d.width], np.int32),
                np.array(boxes, np.float32).reshape(-1, 4), np.array(extra, np.float32).reshape(-1, 3))


def _decode(data, encoded, shape):
    """Datum -> uint8 BGR [H, W, 3] (colour JPEG/PNG/BMP, or raw CHW bytes)."""
    def from_encoded():
        # JPEG with the accurate integer DCT, as libjpeg's default in OpenCV
        # (TensorFlow's own default is the fast, less exact one)
        rgb = tf.cond(tf.io.is_jpeg(data),
                      lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                      lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
        return tf.reverse(tf.ensure_shape(rgb, [None, None, 3]), axis=[-1])

    def from_raw():
        chw = tf.reshape(tf.io.decode_raw(data, tf.uint8), shape)
        hwc = tf.transpose(chw, [1, 2, 0])
        return tf.cond(shape[0] == 1, lambda: tf.tile(hwc, [1, 1, 3]), lambda: hwc[:, :, :3])

    image = tf.cond(encoded, from_encoded, from_raw)
    return tf.ensure_shape(image, [None, None, 3])


def _read(records: LmdbRecords, index):
    def parse(i):
        return records.parse(int(i))
    data, encoded, shape, boxes, extra = tf.numpy_function(
        parse, [index], [tf.string, tf.bool, tf.int32, tf.float32, tf.float32], stateful=False)
    data.set_shape([])
    encoded.set_shape([])
    shape.set_shape([3])
    return _decode(data, encoded, shape), tf.reshape(boxes, [-1, 4]), tf.reshape(extra, [-1, 3])


@contextmanager
def input_errors(layer, root: Optional[Path] = None):
    """A tf.data failure while reading a batch (a corrupt entry, an undecodable
    image) as one FormatError naming the LMDB, instead of TensorFlow's
    multi-line OpError with the pipeline's traceback inside."""
    try:
        yield
    except tf.errors.OpError as exc:
        own = re.search(r"\b(?:FormatError|CaffessdError): ([^\n]*)", exc.message or "")
        if own:  # raised by caffessd inside the pipeline: it names the file already
            raise CaffessdError(own.group(1)) from None
        reason = re.search(r"Iterator::[\w:]+: ([^\n\t]*)", exc.message or "")
        text = (reason.group(1) if reason else (exc.message or type(exc).__name__)).split("\n")[0].strip()
        raise FormatError(resolve_source(layer.data_param.source, root),
                          f"cannot read a batch: {text[:300]}") from None


def _batch_ground_truth(rows):
    """Ragged [N, None, 7] -> [M, 8] with item_id first; the -1 row when empty."""
    item = tf.cast(rows.value_rowids(), tf.float32)[:, None]
    flat = tf.concat([item, rows.flat_values], axis=1)
    return tf.cond(tf.shape(flat)[0] > 0, lambda: flat, lambda: tf.constant([EMPTY_BATCH_ROW], tf.float32))


def build_input(layer: caffe_pb2.LayerParameter, phase: str = "TRAIN", *, seed: int = 0,
                shard: Tuple[int, int] = (0, 1), root: Optional[Path] = None,
                repeat: Optional[bool] = None, num_parallel_calls: Optional[int] = None,
                prefetch: int = 2) -> "tf.data.Dataset":
    """The AnnotatedData layer's output as a tf.data.Dataset of (images, gt).

    TRAIN: shuffled with `seed` each epoch and repeated forever, full
    batches only (as Caffe's data layer cycles its LMDB). TEST: LMDB order,
    one pass, the last batch possibly short (`repeat` overrides). `shard`
    (index, count) gives a distributed worker every count-th entry.
    """
    config = parse_layer(layer, phase)
    records = LmdbRecords(resolve_source(config.source, root))
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise CaffessdError(f"shard {shard} is not (index, count) with 0 <= index < count")
    train = phase.upper() == "TRAIN"
    repeat = train if repeat is None else repeat
    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls

    positions = tf.data.Dataset.range(len(records)).shard(count, index)
    if train:
        positions = positions.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        positions = positions.repeat()
    base_seed = tf.constant([seed, index], tf.int64)

    @tf.autograph.experimental.do_not_convert  # plain TF ops: skip AutoGraph's slow conversion
    def load_and_augment(step, position):
        image, boxes, extra = _read(records, position)
        return augment(image, boxes, extra, config, fold(base_seed, step))

    dataset = positions.enumerate().map(load_and_augment, num_parallel_calls=calls, deterministic=True)
    dataset = dataset.ragged_batch(config.batch_size, drop_remainder=repeat)
    @tf.autograph.experimental.do_not_convert
    def to_tops(images, rows):
        return (images if isinstance(images, tf.Tensor) else images.to_tensor()), _batch_ground_truth(rows)

    dataset = dataset.map(to_tops, num_parallel_calls=calls, deterministic=True)
    return dataset.prefetch(prefetch)


def find_data_layer(net: caffe_pb2.NetParameter, phase: str = "TRAIN") -> caffe_pb2.LayerParameter:
    """The AnnotatedData layer of `net` included in `phase` (or the only one)."""
    want = caffe_pb2.TRAIN if phase.upper() == "TRAIN" else caffe_pb2.TEST
    layers = [layer for layer in net.layer if layer.type == "AnnotatedData"]
    for layer in layers:
        phases = [rule.phase for rule in layer.include if rule.HasField("phase")]
        if not phases or want in phases:
            return layer
    if len(layers) == 1:
        return layers[0]
    raise CaffessdError(f"net '{net.name}' has no AnnotatedData layer for phase {phase}")
