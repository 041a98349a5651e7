"""The solver a run needs, from how long it is and what it starts from.

Three cases, all written as plain Caffe solvers (every field and lr_policy is
one the SSD fork's SGDSolver knows, so the files run in Caffe too):

- the published schedule (no --max-iter, no --from-scratch): chuanqi305's
  solver_train, RMSProp at 0.0005 halved at 20k and 40k of 120k iterations, a
  test every 10k, a snapshot every 1k. It fine-tunes converted weights.
- --max-iter N: the same solver over N iterations: steps at N/6 and N/3, a
  test and a snapshot every N/10, and the train net's BatchNorm averaging its
  statistics over a window of about N/20 iterations (see bn_moving_average).
- --from-scratch (with or without --max-iter): what training without
  pretrained weights needs; see FromScratch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

PUBLISHED_MAX_ITER = 120000
PUBLISHED_TEST_INTERVAL = 10000
PUBLISHED_SNAPSHOT = 1000
PUBLISHED_LR = 0.0005
PUBLISHED_SOLVER = "RMSProp"
# Caffe's BatchNormParameter default; the published train nets leave it unset.
CAFFE_MOVING_AVERAGE_FRACTION = 0.999
TESTS_PER_RUN = 10
# Iterations a from-scratch train net's BatchNorm averages over (bn_moving_average).
FROM_SCRATCH_BN_WINDOW = 10


@dataclass(frozen=True)
class FromScratch:
    """The solver of a run from the fillers (gen-model --from-scratch), chosen by
    measurement on generated class-by-shape data (scripts/benchmark_learning.py,
    docs/training-recipe.md):

    - Adam (momentum 0.9, momentum2 0.999) at 0.005: its bias-corrected moments
      keep the first steps at the learning rate whatever the gradients' scale,
      which is what a warm-up does for SGD (Caffe has no warm-up policy). SGD
      with momentum at 0.02 learned several times slower over a few thousand
      iterations; Caffe's RMSProp has no bias correction (its squared-gradient
      average starts at 0, so its first steps are up to 10x the rate, just when
      an untrained net's gradients are largest);
    - the rate decays to 0 over the run (lr_policy "poly", power 1): test mAP
      rises steadily instead of jumping with a high constant rate, and the last
      snapshot is the settled one;
    - every layer at the full rate (pretrained layers' lr_mult 1);
    - a softmax class loss unless --conf-loss says otherwise (MobileNetV2's
      published logistic loss matches TF's converted sigmoid weights; from
      scratch, softmax reached a higher held-out mAP at 3,200-6,400 of 8,000
      images seen, about the same at the end: one seed, docs/training-recipe.md);
    - BatchNorm statistics averaged over the last 10 iterations only (see
      bn_moving_average);
    - fillers: the box and class predictors N(0, 0.03), every other
      convolution msra in its FAN_OUT form (heads.py, net_builder.add_conv);
    - the first head's priors as every other head's: 6 boxes, not the
      published 3 that converted weights expect (priors.py);
    - no photometric distortion and no zoom-out (expand): the crops and the
      mirror stay. A small net from scratch underfits a short run with them, as
      torchvision's SSDlite recipe also leaves them out (see data.py).
    """

    solver_type: str = "Adam"
    lr: float = 0.005
    momentum: float = 0.9
    momentum2: float = 0.999
    lr_policy: str = "poly"
    power: float = 1.0


FROM_SCRATCH = FromScratch()


def run_length(max_iter: Optional[int]) -> int:
    return PUBLISHED_MAX_ITER if max_iter is None else max_iter


def interval(max_iter: Optional[int], published: int) -> int:
    """Test / snapshot interval: the published one, or a tenth of the run (at least 1)."""
    if max_iter is None:
        return published
    return max(1, -(-max_iter // TESTS_PER_RUN))


def stepvalues(max_iter: int) -> List[int]:
    """The published multistep points (20k and 40k of 120k), scaled to the run."""
    return [max_iter // 6, max_iter // 3] if max_iter >= 6 else []


def bn_moving_average(max_iter: Optional[int], from_scratch: bool) -> Optional[float]:
    """moving_average_fraction of the train net's BatchNorm layers, or None for Caffe's 0.999.

    Caffe's running statistics weight iteration k back by fraction^k, a window of
    about 1 / (1 - fraction) iterations: 1000 at 0.999. In a run of a few
    thousand iterations that window still holds the first iterations'
    statistics, taken when the weights were very different, and the test net
    normalises with them (test mAP jumps while the loss falls). With --max-iter
    the window is a twentieth of the run, between 10 and 1000 iterations.

    From scratch it is FROM_SCRATCH_BN_WINDOW iterations whatever the run's
    length: Adam moves each weight by about the learning rate per iteration, and
    the fan-out fillers start the weights small, so the statistics go stale
    within tens of iterations, not a fraction of the run. Measured at 160x160
    (docs/training-recipe.md): a window of 50 (a twentieth of 1,000 iterations)
    gave one seed a test mAP of 0.377 between 0.533 and 0.663, and the same
    weights scored 0.590 with statistics recomputed over 10 iterations; training
    with a window of 10 removed the dip and raised every early checkpoint.
    """
    if max_iter is None and not from_scratch:
        return None
    window = FROM_SCRATCH_BN_WINDOW if from_scratch else min(1000, max(10, run_length(max_iter) // 20))
    fraction = round(1.0 - 1.0 / window, 6)
    return None if fraction == CAFFE_MOVING_AVERAGE_FRACTION else fraction
