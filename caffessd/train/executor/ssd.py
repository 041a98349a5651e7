"""The SSD layers: PriorBox (a constant) and MultiBoxLoss (matching and
mining in numpy, the loss in TensorFlow ops: caffessd.train.loss)."""
from __future__ import annotations

from caffessd.priorbox import prior_boxes
from caffessd.train import multibox
from caffessd.train.executor.registry import builder
from caffessd.train.loss import multibox_loss_parts


@builder("PriorBox")
def prior_box(ctx, info):
    """Priors depend only on map and image sizes: a constant, as in the ONNX path."""
    feature, image = info.input_shapes[0], info.input_shapes[1]
    array = prior_boxes(info.layer.prior_box_param, feature[2:4], image[2:4])
    ctx.set(info.layer, 0, ctx.tf.constant(array))


@builder("MultiBoxLoss")
def multibox_loss_layer(ctx, info):
    layer = info.layer
    settings = multibox.Settings.from_layer(layer, ctx.options.get("empty_image_negatives", 0))
    loc, conf, priors, gt = (ctx.get(b) for b in layer.bottom[:4])
    if loc.dtype == ctx.tf.float16:  # mixed precision: the loss in float32
        loc, conf = ctx.tf.cast(loc, ctx.tf.float32), ctx.tf.cast(conf, ctx.tf.float32)
    (loc_part, conf_part), num_matches, positives = multibox_loss_parts(loc, conf, priors, gt, settings)
    loss = loc_part + conf_part
    weight = layer.loss_weight[0] if layer.loss_weight else 1.0
    ctx.set(layer, 0, loss)
    ctx.losses[layer.top[0]] = loss * weight
    ctx.aux[layer.name] = {"num_matches": num_matches, "positives": positives,
                           "loc": loc_part * weight, "conf": conf_part * weight}
