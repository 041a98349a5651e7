"""How a learnable blob is laid out in its tf.Variable.

Caffe's convolution filters are (O, I/group, kh, kw); TensorFlow's conv2d
takes (kh, kw, I, O) and its depthwise conv (kh, kw, C, multiplier). Kept in
Caffe's layout, every filter is transposed twice per iteration (forward, and
its gradient back): 177 Transpose ops, 8% of a MobileNetV2-SSDLite 300 step's
op time. So the executor keeps such filters in TensorFlow's layout and
converts at the edges only: fillers and `--weights` going in, snapshots and
solverstates coming out (ParamStore and Solver do that). A layer family says
how its blobs are kept with `registry.storage`; anything else stays in
Caffe's layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class BlobLayout:
    """A Caffe blob of `caffe_shape`, reshaped to `grouped`, then transposed by `order`."""

    caffe_shape: Tuple[int, ...]
    grouped: Tuple[int, ...]
    order: Tuple[int, ...]

    @classmethod
    def caffe(cls, shape: Sequence[int]) -> "BlobLayout":
        """Caffe's own layout (nothing moves)."""
        shape = tuple(int(s) for s in shape)
        return cls(shape, shape, tuple(range(len(shape))))

    @classmethod
    def transposed(cls, shape: Sequence[int], order: Sequence[int],
                   grouped: Optional[Sequence[int]] = None) -> "BlobLayout":
        shape = tuple(int(s) for s in shape)
        return cls(shape, tuple(int(s) for s in (grouped or shape)), tuple(int(o) for o in order))

    @property
    def is_caffe(self) -> bool:
        return self.grouped == self.caffe_shape and self.order == tuple(range(len(self.order)))

    @property
    def stored_shape(self) -> Tuple[int, ...]:
        return tuple(self.grouped[i] for i in self.order)

    @property
    def _inverse(self) -> Tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self.order))

    # numpy, at the edges
    def to_stored(self, array: np.ndarray) -> np.ndarray:
        """A Caffe-layout array (any shape with the blob's size) in the variable's layout."""
        if self.is_caffe:
            return np.asarray(array).reshape(self.caffe_shape)
        return np.ascontiguousarray(np.asarray(array).reshape(self.grouped).transpose(self.order))

    def to_caffe(self, array: np.ndarray) -> np.ndarray:
        """The variable's value (or its gradient, or a solver history) in Caffe's layout."""
        if self.is_caffe:
            return np.asarray(array).reshape(self.caffe_shape)
        return np.ascontiguousarray(np.asarray(array).transpose(self._inverse).reshape(self.caffe_shape))

    # TensorFlow, in a graph whose builder wants another layout than the stored one
    def tf_to_caffe(self, tf, tensor):
        if self.is_caffe:
            return tensor
        return tf.reshape(tf.transpose(tensor, self._inverse), self.caffe_shape)

    def tf_from_caffe(self, tf, tensor):
        if self.is_caffe:
            return tensor
        return tf.transpose(tf.reshape(tensor, self.grouped), self.order)


def relayout(tf, tensor, have: Optional[BlobLayout], want: Optional[BlobLayout]):
    """`tensor` kept as `have` (None: Caffe's) expressed as `want` (None: Caffe's)."""
    have_caffe = have is None or have.is_caffe
    want_caffe = want is None or want.is_caffe
    if have == want or (have_caffe and want_caffe):
        return tensor
    caffe = tensor if have_caffe else have.tf_to_caffe(tf, tensor)
    return caffe if want_caffe else want.tf_from_caffe(tf, caffe)
