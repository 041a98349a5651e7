"""BatchNorm statistics recomputed at the current weights (train --bn-recompute N).

Caffe's test net normalises with the running averages that training kept
(batch_norm_layer.cpp): each iteration k back weighs moving_average_fraction^k.
While the weights move fast those averages mix statistics of older weights
into the ones the test net and the snapshots use; a short window mends that
but is noisy once the weights settle (docs/training-recipe.md). Recomputing
them at fixed weights has neither fault: N train-net forward passes (training
batches, training-mode BatchNorm) at the current weights, every batch weighed
the same, written in Caffe's own blob form (sums and their weight N), so the
snapshots stay caffemodels that Caffe reads unchanged. The weights themselves
are not touched. Not a Caffe feature: off unless asked for.
"""
from __future__ import annotations

from typing import Callable, List

import numpy as np

from caffessd.errors import CaffessdError
from caffessd.train.executor.normalization import uses_global_stats


class BatchNormRecompute:
    """Recompute the running statistics of every train-net BatchNorm that keeps them."""

    def __init__(self, tf, train_net, store, batches: int, next_images: Callable, compute_dtype=None,
                 compiled: bool = True):
        if batches < 1:
            raise CaffessdError(f"--bn-recompute must be at least 1 batch, got {batches}")
        self.tf = tf
        self.train_net = train_net
        self.batches = int(batches)
        self.next_images = next_images
        self.compute_dtype = compute_dtype
        # The blobs of the layers whose statistics training updates (a use_global_stats layer keeps its own).
        self.variables = [var for info in train_net.infos
                          if info.type == "BatchNorm" and not uses_global_stats(info.layer, True)
                          for var in store.variables[info.name]]
        # The variables of the pass's updates in the order it returns them: a compiled pass
        # can return only tensors, so tracing records which variable each one is for.
        self._order: List = []
        self._pass = (tf.function(self._statistics, reduce_retracing=True, autograph=False) if compiled
                      else self._statistics)

    def _statistics(self, images):
        """One training-mode pass: each updated blob's new value. With the blobs at
        zero that is Caffe's update from nothing: weight 1, sums = this batch's
        mean and (m / (m - 1)) variance."""
        data = self.train_net.data_layers[0].layer
        ctx = self.train_net.forward({data.top[0]: images}, training=True, update_stats=True,
                                     compute_dtype=self.compute_dtype, part="body")
        self._order = [var for var, _ in ctx.stat_updates]
        return [value for _, value in ctx.stat_updates]

    def __call__(self) -> None:
        if not self.variables:
            return
        # From zero blobs each pass's update is that batch's own statistics (the pass
        # returns the updates without applying them, so the blobs stay at zero).
        for var in self.variables:
            var.assign(self.tf.zeros_like(var))
        totals = None
        for _ in range(self.batches):
            values = [np.asarray(v, np.float64) for v in self._pass(self.next_images())]
            totals = values if totals is None else [t + v for t, v in zip(totals, values)]
        # Sums over N batches and weight N: the stored statistics are their plain means.
        for var, total in zip(self._order, totals):
            var.assign(total.astype(var.dtype.as_numpy_dtype))
