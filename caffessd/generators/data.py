"""AnnotatedData layers of the train and test nets, with the SSD fork's augmentation.

Train: random photometric distortion, zoom-out (expand) up to 4x, the seven
batch samplers of the SSD paper (whole image, then crops with min IoU 0.1,
0.3, 0.5, 0.7, 0.9 and any), a warp to the input size with a random
interpolation, and mirroring (from scratch: no distortion or expansion, see
generators/schedule.py). Test: a plain warp.
"""
from __future__ import annotations

from caffessd import caffe_pb2
from caffessd.generators.net_builder import NetBuilder

DEFAULT_LABELMAP = "labelmap.prototxt"
_INTERPOLATIONS = ("LINEAR", "AREA", "NEAREST", "CUBIC", "LANCZOS4")
_MIN_JACCARD = (0.1, 0.3, 0.5, 0.7, 0.9)


def add_data_layer(b: NetBuilder) -> None:
    config = b.config
    train = b.stage == "train"
    layer = b.layer("data", "AnnotatedData", [], ["data", "label"])
    layer.include.add().phase = caffe_pb2.TRAIN if train else caffe_pb2.TEST
    _transform(layer.transform_param, config, train)
    layer.data_param.source = config.lmdb_train if train else config.lmdb_test
    layer.data_param.batch_size = config.batch_size if train else config.test_batch_size
    layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    annotated = layer.annotated_data_param
    if train:
        _batch_samplers(annotated)
    else:
        annotated.batch_sampler.add()
    annotated.label_map_file = config.labelmap or DEFAULT_LABELMAP
    b.shapes["data"] = (3, config.input_height, config.input_width)


def _transform(param, config, train: bool) -> None:
    param.scale = config.scale
    if train:
        param.mirror = True
    means = config.mean if len(config.mean) == 3 else config.mean * 3
    param.mean_value.extend(means)
    resize = param.resize_param
    resize.prob = 1.0
    resize.resize_mode = caffe_pb2.ResizeParameter.WARP
    resize.height = config.input_height
    resize.width = config.input_width
    modes = _INTERPOLATIONS if train else _INTERPOLATIONS[:1]
    resize.interp_mode.extend(getattr(caffe_pb2.ResizeParameter, mode) for mode in modes)
    if not train:
        return
    param.emit_constraint.emit_type = caffe_pb2.EmitConstraint.CENTER
    if config.from_scratch:
        return  # crops and mirror only (schedule.FromScratch)
    distort = param.distort_param
    distort.brightness_prob = 0.5
    distort.brightness_delta = 32.0
    distort.contrast_prob = 0.5
    distort.contrast_lower = 0.5
    distort.contrast_upper = 1.5
    distort.hue_prob = 0.5
    distort.hue_delta = 18.0
    distort.saturation_prob = 0.5
    distort.saturation_lower = 0.5
    distort.saturation_upper = 1.5
    distort.random_order_prob = 0.0
    param.expand_param.prob = 0.5
    param.expand_param.max_expand_ratio = 4.0


def _batch_samplers(annotated) -> None:
    whole = annotated.batch_sampler.add()
    whole.max_sample = 1
    whole.max_trials = 1
    for constraint in [("min_jaccard_overlap", v) for v in _MIN_JACCARD] + [("max_jaccard_overlap", 1.0)]:
        sampler = annotated.batch_sampler.add()
        sampler.sampler.min_scale = 0.3
        sampler.sampler.max_scale = 1.0
        sampler.sampler.min_aspect_ratio = 0.5
        sampler.sampler.max_aspect_ratio = 2.0
        setattr(sampler.sample_constraint, *constraint)
        sampler.max_sample = 1
        sampler.max_trials = 50


def add_deploy_input(b: NetBuilder) -> None:
    config = b.config
    b.net.input.append("data")
    b.net.input_shape.add().dim.extend([1, 3, config.input_height, config.input_width])
    b.shapes["data"] = (3, config.input_height, config.input_width)
