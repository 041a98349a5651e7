"""The one place caffessd.train imports TensorFlow, with a clear error without it
(quietly: caffessd.tfconvert.tfimport)."""
from __future__ import annotations

from caffessd.tfconvert.tfimport import tensorflow as _tensorflow


def tensorflow():
    """The tensorflow module, or a CaffessdError naming the extra to install."""
    return _tensorflow("training")
