"""ForwardContext: the blobs of one forward pass of a Caffe net in TensorFlow.

Caffe is NCHW; TensorFlow's CPU kernels for convolution and pooling want NHWC.
Each 4-d blob is therefore kept in whichever layout its producer made, and
converted lazily: convolutions, BatchNorm, Scale and activations stay in NHWC,
while layers whose meaning depends on Caffe's memory order (Permute, Flatten,
Reshape, Concat, Softmax) ask for NCHW. A Permute(0,2,3,1) of an NHWC blob is
then a no-op, which is the common SSD head.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from caffessd.errors import CaffessdError
from caffessd.train.executor.layouts import relayout
from caffessd.train.tfimport import tensorflow

NCHW, NHWC = "NCHW", "NHWC"


class ForwardContext:
    """Blob name -> (tensor, layout) while a net runs; also collects BN updates."""

    def __init__(self, variables, training: bool, update_stats: bool, compute_dtype=None, options=None,
                 layouts=None):
        self.tf = tensorflow()
        # Trainer options that layers read beside their own parameters
        # (MultiBoxLoss: empty_image_negatives).
        self.options = dict(options or {})
        # Mixed precision: layers compute in float16 on float16 copies of the
        # float32 (master) blobs; BatchNorm statistics and losses stay float32.
        self.compute_dtype = compute_dtype
        self.variables = variables          # layer name -> [tf.Variable] in Caffe blob order
        self.layouts = layouts or {}        # layer name -> [BlobLayout]: how each variable is kept (Caffe's if absent)
        self.training = training            # TRAIN-phase semantics (batch statistics, dropout)
        self.update_stats = update_stats    # collect Caffe's moving-average updates
        self.blobs: Dict[str, Tuple[object, str]] = {}
        self.stat_updates: List[Tuple[object, object]] = []  # (variable, new value)
        self.layer_outputs: Dict[str, List[object]] = {}     # layer name -> its top tensors (NCHW on demand)
        self.losses: Dict[str, object] = {}                  # loss layer top -> weighted scalar
        self.aux: Dict[str, object] = {}                     # side outputs of loss layers (matches, ...)

    # ------------------------------------------------------------ blobs

    def feed(self, blob: str, tensor, layout: str = NCHW) -> None:
        self.blobs[blob] = (tensor, layout)

    def has(self, blob: str) -> bool:
        return blob in self.blobs

    def _lookup(self, blob: str):
        if blob not in self.blobs:
            raise CaffessdError(f"blob '{blob}' is read before any layer produces it")
        return self.blobs[blob]

    def get(self, blob: str):
        """The blob in Caffe's NCHW order."""
        tensor, layout = self._lookup(blob)
        if layout == NHWC:
            tensor = self.tf.transpose(tensor, [0, 3, 1, 2])
            self.blobs[blob] = (tensor, NCHW)
        return tensor

    def get_nhwc(self, blob: str):
        """A 4-d blob as NHWC (other ranks are returned unchanged)."""
        tensor, layout = self._lookup(blob)
        if layout == NCHW and tensor.shape.rank == 4:
            tensor = self.tf.transpose(tensor, [0, 2, 3, 1])
            self.blobs[blob] = (tensor, NHWC)
        return tensor

    def get_any(self, blob: str):
        """(tensor, layout) as stored: for element-wise layers that do not care."""
        return self._lookup(blob)

    def set(self, layer, index: int, tensor, layout: str = NCHW) -> None:
        self.blobs[layer.top[index]] = (tensor, layout)
        outputs = self.layer_outputs.setdefault(layer.name, [None] * len(layer.top))
        outputs[index] = (tensor, layout)

    def layer_output_nchw(self, name: str, index: int = 0):
        tensor, layout = self.layer_outputs[name][index]
        return self.tf.transpose(tensor, [0, 3, 1, 2]) if layout == NHWC else tensor

    # ------------------------------------------------------------ parameters

    def params(self, info, layouts=None) -> list:
        """The layer's blobs in Caffe's layout, or as `layouts` asks (a BlobLayout
        or None, Caffe's, per blob): a variable already kept that way is read as it is."""
        variables = self.variables.get(info.name, [])
        kept = self.layouts.get(info.name, [])
        wanted = list(layouts or [])
        variables = [relayout(self.tf, v, kept[i] if i < len(kept) else None, wanted[i] if i < len(wanted) else None)
                     for i, v in enumerate(variables)]
        if self.compute_dtype is None or info.type == "BatchNorm":
            return variables
        return [self.tf.cast(v, self.compute_dtype) for v in variables]

    def add_stat_update(self, variable, value) -> None:
        self.stat_updates.append((variable, value))
