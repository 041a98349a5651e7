"""The SSD fork's data augmentation as TensorFlow ops, one module per step in
the order AnnotatedDataLayer applies them:

distort (photometric, OpenCV's uint8 HSV) -> expand (zoom out onto a mean
canvas) -> sample (batch_sampler crops) -> resize (ApplyResize's modes and
cv::resize's interpolations) -> crop/mirror/mean (DataTransformer::Transform).

`boxes` holds the NormalizedBBox arithmetic of bbox_util.cpp they share.
Every random step takes a stateless seed (shape [2] int32/int64), so a
pipeline is deterministic given its seed whatever the parallelism.

May import: the core and TensorFlow (through caffessd.train.tfimport).
"""
