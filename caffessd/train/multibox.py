"""MultiBoxLoss's matching and hard-negative mining in numpy, as the SSD fork
of Caffe does them (src/caffe/util/bbox_util.cpp, multibox_loss_layer.cpp).

No gradient flows through these decisions in Caffe either: they choose which
priors are positives (with which ground truth) and which are mined negatives.
`caffessd.train.loss` then computes the differentiable loss on those rows.

Scope: share_location true (what the SSD nets use; Caffe itself mines only
then), no mining NMS (nms_param), bp_inside false.

Images without objects: the fork mines negatives per image in proportion to
its positives, so an image without ground truth adds nothing to the loss
(unless mining is NONE, where every prior counts). `empty_image_negatives`
N > 0 (train --empty-image-negatives) makes each such image give its N
hardest priors as background examples instead; images whose only boxes are
difficult ones left out by use_difficult_gt: false are not treated so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from caffessd import caffe_pb2
from caffessd.boxmatch import box_sizes, cross_boundary, jaccard, match  # noqa: F401 (re-exported)
from caffessd.errors import CaffessdError

P = caffe_pb2.MultiBoxLossParameter
CODE = caffe_pb2.PriorBoxParameter
FLT_MIN = np.float32(1.17549435e-38)


@dataclass
class Settings:
    """The MultiBoxLoss options that decide matching, mining and the loss."""

    num_classes: int
    background_label_id: int = 0
    match_type: int = P.PER_PREDICTION
    overlap_threshold: float = 0.5
    use_prior_for_matching: bool = True
    use_difficult_gt: bool = True
    ignore_cross_boundary_bbox: bool = False
    mining_type: int = P.MAX_NEGATIVE
    neg_pos_ratio: float = 3.0
    neg_overlap: float = 0.5
    sample_size: int = 64
    code_type: int = CODE.CORNER
    encode_variance_in_target: bool = False
    loc_loss_type: int = P.SMOOTH_L1
    conf_loss_type: int = P.SOFTMAX
    loc_weight: float = 1.0
    normalization: int = caffe_pb2.LossParameter.VALID
    propagate_loc: bool = True
    propagate_conf: bool = True
    empty_image_negatives: int = 0     # not the fork's: hard negatives mined per image without objects

    @classmethod
    def from_layer(cls, layer: caffe_pb2.LayerParameter, empty_image_negatives: int = 0) -> "Settings":
        p = layer.multibox_loss_param
        where = f"MultiBoxLoss '{layer.name}'"
        if not p.HasField("num_classes"):
            raise CaffessdError(f"{where}: multibox_loss_param needs num_classes")
        if not p.share_location:
            raise CaffessdError(f"{where}: share_location: false is not supported by the trainer")
        if p.HasField("nms_param") and p.nms_param.nms_threshold > 0:
            raise CaffessdError(f"{where}: mining with nms_param is not supported by the trainer")
        if p.bp_inside or p.map_object_to_agnostic:
            raise CaffessdError(f"{where}: bp_inside / map_object_to_agnostic are not supported by the trainer")
        mining = p.mining_type
        if p.HasField("do_neg_mining") and not p.do_neg_mining:
            mining = P.NONE
        loss = layer.loss_param
        normalization = loss.normalization
        if not loss.HasField("normalization") and loss.HasField("normalize"):
            normalization = caffe_pb2.LossParameter.VALID if loss.normalize else caffe_pb2.LossParameter.BATCH_SIZE
        down = list(layer.propagate_down)
        return cls(num_classes=p.num_classes, background_label_id=p.background_label_id, match_type=p.match_type,
                   overlap_threshold=p.overlap_threshold, use_prior_for_matching=p.use_prior_for_matching,
                   use_difficult_gt=p.use_difficult_gt, ignore_cross_boundary_bbox=p.ignore_cross_boundary_bbox,
                   mining_type=mining, neg_pos_ratio=p.neg_pos_ratio, neg_overlap=p.neg_overlap,
                   sample_size=p.sample_size, code_type=p.code_type,
                   encode_variance_in_target=p.encode_variance_in_target, loc_loss_type=p.loc_loss_type,
                   conf_loss_type=p.conf_loss_type, loc_weight=p.loc_weight, normalization=normalization,
                   propagate_loc=down[0] if down else True, propagate_conf=down[1] if len(down) > 1 else True,
                   empty_image_negatives=int(empty_image_negatives))


@dataclass
class Targets:
    """What the loss is computed on, in Caffe's row order (image, then prior).

    positives: (K, 4) int rows (image, prior, gt index into that image's boxes, its label);
    loc_targets: (K, 4) encoded ground truth; negatives: (L, 2) (image, prior);
    gt_boxes: per image (G, 5) [label, xmin, ymin, xmax, ymax] after filtering.
    """

    positives: np.ndarray
    loc_targets: np.ndarray
    negatives: np.ndarray
    num_matches: int
    gt_boxes: Dict[int, np.ndarray] = field(default_factory=dict)
    match_indices: List[np.ndarray] = field(default_factory=list)  # per image, -2/-1/gt index per prior


def ground_truth(gt: np.ndarray, settings: Settings) -> Dict[int, np.ndarray]:
    """GetGroundTruth: rows [item, label, instance, xmin, ymin, xmax, ymax, difficult] by image."""
    boxes: Dict[int, list] = {}
    for row in np.asarray(gt, np.float32).reshape(-1, 8):
        item = int(row[0])
        if item == -1:
            continue
        label = int(row[1])
        if label == settings.background_label_id:
            raise CaffessdError(f"ground truth of image {item} uses the background label {label}")
        if not settings.use_difficult_gt and bool(row[7]):
            continue
        boxes.setdefault(item, []).append([label, row[3], row[4], row[5], row[6]])
    return {k: np.asarray(v, np.float32) for k, v in boxes.items()}


def decode(priors: np.ndarray, variances: np.ndarray, loc: np.ndarray, settings: Settings) -> np.ndarray:
    """DecodeBBox (no clipping) of (P, 4) predictions against (P, 4) priors."""
    var = np.ones_like(variances) if settings.encode_variance_in_target else variances
    if settings.code_type == CODE.CORNER:
        return priors + var * loc
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    if settings.code_type == CODE.CORNER_SIZE:
        scale = np.stack([pw, ph, pw, ph], axis=1)
        return priors + var * loc * scale
    pcx, pcy = (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2
    cx = var[:, 0] * loc[:, 0] * pw + pcx
    cy = var[:, 1] * loc[:, 1] * ph + pcy
    w = np.exp(var[:, 2] * loc[:, 2]) * pw
    h = np.exp(var[:, 3] * loc[:, 3]) * ph
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)


def encode(priors: np.ndarray, variances: np.ndarray, boxes: np.ndarray, settings: Settings) -> np.ndarray:
    """EncodeBBox of matched gt `boxes` (K, 4) against their priors, then, with
    encode_variance_in_target, EncodeLocPrediction's division by the variances."""
    var = variances
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    if settings.code_type == CODE.CORNER:
        out = boxes - priors
    elif settings.code_type == CODE.CORNER_SIZE:
        out = (boxes - priors) / np.stack([pw, ph, pw, ph], axis=1)
    else:
        pcx, pcy = (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        bcx, bcy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        out = np.stack([(bcx - pcx) / pw, (bcy - pcy) / ph, np.log(bw / pw), np.log(bh / ph)], axis=1)
    # Without encode_variance_in_target EncodeBBox divides by the variance; with
    # it EncodeLocPrediction divides both target and prediction by it. Either way
    # the target is divided once.
    return (out / var).astype(np.float32)


def conf_losses(conf: np.ndarray, labels: np.ndarray, settings: Settings) -> np.ndarray:
    """ComputeConfLoss: per-prior confidence loss (P,) for `labels` (P,)."""
    conf = conf.astype(np.float32)
    if settings.conf_loss_type == P.SOFTMAX:
        shifted = conf - conf.max(axis=1, keepdims=True)
        prob = np.exp(shifted[np.arange(len(conf)), labels]) / np.exp(shifted).sum(axis=1)
        return -np.log(np.maximum(prob, FLT_MIN))
    target = np.zeros_like(conf)
    target[np.arange(len(conf)), labels] = 1
    positive = (conf >= 0).astype(np.float32)
    return -(conf * (target - positive) - np.log1p(np.exp(conf - 2 * conf * positive))).sum(axis=1)


def loc_losses(diff: np.ndarray, settings: Settings) -> np.ndarray:
    a = np.abs(diff)
    if settings.loc_loss_type == P.SMOOTH_L1:
        return np.where(a < 1, 0.5 * diff * diff, a - 0.5).sum(axis=1)
    return (0.5 * diff * diff).sum(axis=1)


def find_targets(loc: np.ndarray, conf: np.ndarray, prior_blob: np.ndarray, gt: np.ndarray,
                 settings: Settings) -> Targets:
    """Matching and mining for a batch: loc (N, P, 4), conf (N, P, C), prior_blob (1, 2, P*4)."""
    num, num_priors = loc.shape[0], loc.shape[1]
    priors = prior_blob.reshape(2, -1, 4)[0].astype(np.float32)
    variances = prior_blob.reshape(2, -1, 4)[1].astype(np.float32)
    boxes = ground_truth(gt, settings)
    annotated = {int(item) for item in np.asarray(gt, np.float32).reshape(-1, 8)[:, 0] if item >= 0}
    positives, loc_targets, negatives, all_indices = [], [], [], []
    num_matches = 0
    for i in range(num):
        gt_i = boxes.get(i)
        if gt_i is None:
            all_indices.append(np.full(num_priors, -1, np.int64))
            if settings.empty_image_negatives > 0 and settings.mining_type != P.NONE and i not in annotated:
                negatives.extend((i, int(m)) for m in empty_image_negatives(conf[i], settings))
            continue
        candidates = priors if settings.use_prior_for_matching else decode(priors, variances, loc[i], settings)
        indices, overlaps = match(gt_i, candidates, settings)
        matched = indices > -1
        num_matches += int(matched.sum())
        if settings.mining_type != P.NONE:
            labels = np.where(matched, gt_i[np.maximum(indices, 0), 0].astype(np.int64), settings.background_label_id)
            loss = conf_losses(conf[i], labels, settings)
            if settings.mining_type == P.HARD_EXAMPLE:
                where = np.flatnonzero(matched)
                target = encode(priors[where], variances[where], gt_i[indices[where], 1:5], settings)
                pred = loc[i][where] / (variances[where] if settings.encode_variance_in_target else 1)
                loss = loss.copy()
                loss[where] += loc_losses(pred - target, settings).astype(np.float32)
                eligible = np.ones(num_priors, bool)
                limit = min(settings.sample_size, num_priors)
            else:
                eligible = (indices == -1) & (overlaps < settings.neg_overlap)
                limit = int(int(matched.sum()) * settings.neg_pos_ratio)
            chosen = hardest(loss, eligible, limit)
            selected = np.zeros(num_priors, bool)
            selected[chosen] = True
            if settings.mining_type == P.HARD_EXAMPLE:
                dropped = matched & ~selected
                indices[dropped] = -1
                num_matches -= int(dropped.sum())
                matched = indices > -1
            negatives.extend((i, int(m)) for m in np.flatnonzero((indices == -1) & selected))
        where = np.flatnonzero(matched)
        positives.extend((i, int(m), int(indices[m]), int(gt_i[indices[m], 0])) for m in where)
        loc_targets.append(encode(priors[where], variances[where], gt_i[indices[where], 1:5], settings))
        all_indices.append(indices)
    return Targets(np.asarray(positives, np.int64).reshape(-1, 4),
                   np.concatenate(loc_targets).reshape(-1, 4) if loc_targets else np.zeros((0, 4), np.float32),
                   np.asarray(negatives, np.int64).reshape(-1, 2), num_matches, boxes, all_indices)


def empty_image_negatives(conf: np.ndarray, settings: Settings) -> np.ndarray:
    """The `empty_image_negatives` priors of an image without objects whose
    background confidence loss is highest."""
    labels = np.full(len(conf), settings.background_label_id, np.int64)
    loss = conf_losses(conf, labels, settings)
    return hardest(loss, np.ones(len(conf), bool), settings.empty_image_negatives)


def hardest(loss: np.ndarray, eligible: np.ndarray, limit: int) -> np.ndarray:
    """The `limit` eligible priors of highest loss (ties: lower prior index first;
    Caffe's std::sort leaves tie order unspecified)."""
    candidates = np.flatnonzero(eligible)
    limit = min(limit, len(candidates))
    order = np.lexsort((candidates, -loss[candidates].astype(np.float64)))
    return candidates[order[:limit]]
