"""Mixed precision for training: float16 compute, float32 master blobs, loss scaling.

The layers run in float16 on float16 copies of the float32 blobs (the solver
updates and the snapshots stay float32); BatchNorm statistics and the
MultiBoxLoss are computed in float32. The loss is multiplied by a scale before
the backward pass, so that small float16 gradients do not flush to zero, and the
float32 gradients are divided by it again. The scale is dynamic, as Keras'
LossScaleOptimizer's default: a non-finite gradient halves it and the batch is
retried without an update; 2000 finite steps in a row double it.
"""
from __future__ import annotations


class DynamicLossScale:
    def __init__(self, initial: float = 2.0 ** 15, growth_interval: int = 2000, minimum: float = 1.0):
        self.value = float(initial)
        self.growth_interval = growth_interval
        self.minimum = minimum
        self.finite_steps = 0

    def can_shrink(self) -> bool:
        return self.value / 2 >= self.minimum

    def shrink(self) -> None:
        """After a non-finite gradient (the caller retries the batch)."""
        self.value /= 2
        self.finite_steps = 0

    def finite_step(self) -> None:
        self.finite_steps += 1
        if self.finite_steps >= self.growth_interval:
            self.value *= 2
            self.finite_steps = 0
