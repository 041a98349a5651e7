"""MultiBoxLoss in TensorFlow: the loss the executor's builder (executor/ssd.py) adds.

Matching and mining (caffessd.train.multibox) run in numpy through
tf.numpy_function on the stopped predictions, as they are discrete choices in
Caffe too; the loss on the chosen rows is built from TensorFlow ops so that
gradients reach mbox_loc and mbox_conf:

    loss = loc_weight * LocLoss(matched rows) / normalizer + ConfLoss(pos + neg rows) / normalizer

(multibox_loss_layer.cpp; SmoothL1Loss/EuclideanLoss and SoftmaxWithLoss/
SigmoidCrossEntropyLoss over one-item blobs, so plain sums).
"""
from __future__ import annotations

import numpy as np

from caffessd.train import multibox
from caffessd.train.tfimport import tensorflow

P = multibox.P


def _numpy_targets(settings):
    def run(loc, conf, priors, gt):
        t = multibox.find_targets(loc, conf, priors, gt, settings)
        return (t.positives, t.loc_targets.astype(np.float32), t.negatives, np.int64(t.num_matches))
    return run


def find_targets_tf(loc, conf, priors, gt, settings):
    """(positives, loc_targets, negatives, num_matches) tensors from the numpy matcher."""
    tf = tensorflow()
    positives, loc_targets, negatives, num_matches = tf.numpy_function(
        _numpy_targets(settings),
        [tf.stop_gradient(tf.cast(loc, tf.float32)), tf.stop_gradient(tf.cast(conf, tf.float32)),
         tf.cast(priors, tf.float32), tf.cast(gt, tf.float32)],
        [tf.int64, tf.float32, tf.int64, tf.int64], stateful=False)
    positives = tf.reshape(positives, [-1, 4])
    loc_targets = tf.reshape(loc_targets, [-1, 4])
    negatives = tf.reshape(negatives, [-1, 2])
    num_matches = tf.reshape(num_matches, [])
    return positives, loc_targets, negatives, num_matches


def replica_sum(value):
    """`value` summed over the replicas of a tf.distribute strategy (itself on one device).

    Caffe normalises by the whole batch's matches; with the batch split over
    replicas each one must divide its share by the global count, so that the
    summed gradients equal the single-device ones."""
    tf = tensorflow()
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return value
    return replica.all_reduce(tf.distribute.ReduceOp.SUM, value)


def loss_from_targets(loc, conf, priors, positives, loc_targets, negatives, num_matches, settings):
    """The differentiable MultiBoxLoss value for chosen rows (see loss_parts)."""
    loc_part, conf_part = loss_parts(loc, conf, priors, positives, loc_targets, negatives, num_matches, settings)
    return loc_part + conf_part


def loss_parts(loc, conf, priors, positives, loc_targets, negatives, num_matches, settings):
    """MultiBoxLoss's two terms for chosen rows, each already normalised (and the
    localisation one weighted by loc_weight), so that the loss is their sum.

    loc (N, P, 4), conf (N, P, C), priors (1, 2, P*4); positives (K, 4) as
    (image, prior, gt index, label); negatives (L, 2) as (image, prior); loc_targets (K, 4).
    """
    tf = tensorflow()
    dtype = loc.dtype
    num, num_priors, num_classes = tf.shape(conf)[0], tf.shape(conf)[1], settings.num_classes
    norm = _normalizer(tf, settings, replica_sum(num), num_priors, replica_sum(num_matches), dtype)
    loc_part = conf_part = tf.zeros([], dtype)
    pos_index = positives[:, :2]
    if settings.propagate_loc:
        pred = tf.gather_nd(loc, pos_index)
        if settings.encode_variance_in_target:
            variances = tf.reshape(tf.cast(priors, dtype), [2, -1, 4])[1]
            pred = pred / tf.gather(variances, positives[:, 1])
        diff = pred - tf.cast(loc_targets, dtype)
        if settings.loc_loss_type == P.SMOOTH_L1:
            a = tf.abs(diff)
            loc_loss = tf.reduce_sum(tf.where(a < 1, 0.5 * diff * diff, a - 0.5))
        else:
            loc_loss = tf.reduce_sum(0.5 * diff * diff)
        loc_part = settings.loc_weight * loc_loss / norm
    if settings.propagate_conf:
        if settings.mining_type == P.NONE:
            # Every prior counts: background unless matched.
            logits = tf.reshape(conf, [-1, num_classes])
            flat = positives[:, 0] * tf.cast(num_priors, tf.int64) + positives[:, 1]
            labels = tf.tensor_scatter_nd_update(
                tf.fill([tf.shape(logits, out_type=tf.int64)[0]], tf.constant(settings.background_label_id, tf.int64)),
                flat[:, None], _gt_labels(positives, tf))
        else:
            rows = tf.concat([pos_index, negatives], axis=0)
            logits = tf.gather_nd(conf, rows)
            labels = tf.concat([_gt_labels(positives, tf),
                                tf.fill([tf.shape(negatives)[0]], tf.constant(settings.background_label_id, tf.int64))], 0)
        conf_part = _conf_loss(tf, logits, labels, settings, dtype) / norm
    return loc_part, conf_part


def _gt_labels(positives, tf):
    """The matched boxes' labels (the positives' last column)."""
    return positives[:, 3]


def _conf_loss(tf, logits, labels, settings, dtype):
    if settings.conf_loss_type == P.SOFTMAX:
        prob = tf.gather(tf.nn.softmax(logits, axis=1), labels, batch_dims=1)
        return -tf.reduce_sum(tf.math.log(tf.maximum(prob, tf.constant(multibox.FLT_MIN, dtype))))
    # Caffe fills the logistic targets with background_label_id, then sets 1 at the label.
    fill = float(settings.background_label_id)
    target = tf.where(tf.one_hot(labels, settings.num_classes) > 0, tf.ones_like(logits),
                      tf.fill(tf.shape(logits), tf.constant(fill, dtype)))
    positive = tf.cast(logits >= 0, dtype)
    return -tf.reduce_sum(logits * (target - positive) - tf.math.log1p(tf.exp(logits - 2 * logits * positive)))


def _normalizer(tf, settings, num, num_priors, num_matches, dtype):
    L = multibox.caffe_pb2.LossParameter
    mode = settings.normalization
    if mode == L.FULL:
        value = tf.cast(num * num_priors, dtype)
    elif mode == L.VALID:
        value = tf.cast(num_matches, dtype)
    elif mode == L.BATCH_SIZE:
        value = tf.cast(num, dtype)
    else:
        value = tf.ones([], dtype)
    return tf.maximum(tf.ones([], dtype), value)


def multibox_loss(loc, conf, priors, gt, settings):
    """(loss, num_matches, positives) for loc (N, P*4), conf (N, P*C), priors, gt rows."""
    (loc_part, conf_part), num_matches, positives = multibox_loss_parts(loc, conf, priors, gt, settings)
    return loc_part + conf_part, num_matches, positives


def multibox_loss_parts(loc, conf, priors, gt, settings):
    """((localisation term, confidence term), num_matches, positives): multibox_loss's
    value in its two parts (what TensorBoard plots as loss/loc and loss/conf)."""
    tf = tensorflow()
    loc = tf.reshape(loc, [tf.shape(loc)[0], -1, 4])
    conf = tf.reshape(conf, [tf.shape(conf)[0], -1, settings.num_classes])
    positives, loc_targets, negatives, num_matches = find_targets_tf(loc, conf, priors, gt, settings)
    parts = loss_parts(loc, conf, priors, positives, loc_targets, negatives, num_matches, settings)
    return parts, num_matches, positives
