"""Layer-type -> checker registry, and the blob-count rules every layer obeys.

A checker is `fn(layer: LayerParameter, inputs: List[Shape]) -> None` that
raises LayerRuleError (via `require`) when Caffe's LayerSetUp or Reshape
would stop. It runs before caffessd's shape rules, so those may assume a
well-formed layer.
"""
from __future__ import annotations

import math
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

INT_MAX = 2 ** 31 - 1  # Caffe's Blob::Reshape refuses counts beyond this
MAX_BLOB_AXES = 32     # Caffe's kMaxBlobAxes

CHECKERS: Dict[str, Callable] = {}
# type -> (fewest bottoms, most bottoms, fewest tops, most tops); None = no bound.
BLOB_COUNTS: Dict[str, Tuple[int, Optional[int], int, Optional[int]]] = {}


class LayerRuleError(ValueError):
    """A layer breaks one of Caffe's rules: `field` names the parameter (or
    bottom/top), `rule` says what Caffe requires."""

    def __init__(self, field: str, rule: str):
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


def require(condition: bool, field: str, rule: str) -> None:
    if not condition:
        raise LayerRuleError(field, rule)


def require_int(values, field: str) -> None:
    """Caffe's proto stores geometry (kernel, stride, pad, dilation,
    num_output, group) as uint32 and copies it into `int`: 2^31 and more wrap
    negative, so Caffe stops; here they would silently make a dimension 1."""
    big = next((v for v in values if v > INT_MAX), None)
    require(big is None, field, f"{big} is beyond Caffe's int range (at most {INT_MAX:,}; larger values wrap negative)")


def require_finite(values, field: str) -> None:
    """A float parameter that is infinite or NaN (or beyond float32) would turn
    priors or boxes into inf/NaN without any error."""
    bad = next((v for v in values if not math.isfinite(v)), None)
    require(bad is None, field, f"must be a finite number, got {bad}")


def checker(*layer_types: str, bottoms=(1, 1), tops=(1, 1)):
    """Register the decorated function for these Caffe layer types, with
    Caffe's bottom/top counts (Exact/Min/MaxNum*Blobs) as (min, max) pairs."""
    def register(fn):
        for layer_type in layer_types:
            CHECKERS[layer_type] = fn
            BLOB_COUNTS[layer_type] = (bottoms[0], bottoms[1], tops[0], tops[1])
        return fn
    return register


def blob_counts(*layer_types: str, bottoms=(1, 1), tops=(1, 1)) -> None:
    """Layers with no rule beyond their blob counts. Their no-op checker is
    filed under the family module that declares them (the family map)."""
    def no_rule(layer, inputs):
        return None

    no_rule.__module__ = sys._getframe(1).f_globals["__name__"]
    checker(*layer_types, bottoms=bottoms, tops=tops)(no_rule)


def _count_rule(kind: str, count: int, low: int, high: Optional[int]) -> None:
    if high == low:
        require(count == low, kind, f"needs exactly {low}, has {count}")
    require(count >= low, kind, f"needs at least {low}, has {count}")
    if high is not None:
        require(count <= high, kind, f"takes at most {high}, has {count}")


def check_layer(layer, inputs: Sequence[Tuple[int, ...]]) -> None:
    """Caffe's checks for one layer given its input shapes (unknown types pass:
    shape inference names them)."""
    counts = BLOB_COUNTS.get(layer.type)
    if counts is not None:
        _count_rule("bottom", len(layer.bottom), counts[0], counts[1])
        _count_rule("top", len(layer.top), counts[2], counts[3])
    fn = CHECKERS.get(layer.type)
    if fn is not None:
        fn(layer, list(inputs))


def check_outputs(outputs: Sequence[Tuple[int, ...]]) -> None:
    """Blob::Reshape's rules for what a layer produces (-1: DetectionOutput's rows)."""
    for index, shape in enumerate(outputs):
        # Messages are built only on failure: this runs for every layer of every walk.
        if len(shape) > MAX_BLOB_AXES:
            raise LayerRuleError(f"top {index}", f"has {len(shape)} axes, Caffe allows {MAX_BLOB_AXES}")
        count = 1
        for dim in shape:
            if dim == -1:
                continue
            if dim < 0:
                raise LayerRuleError(f"top {index}", f"shape {_text(shape)} has a negative dimension")
            count *= dim
        if count > INT_MAX:
            raise LayerRuleError(f"top {index}", f"shape {_text(shape)} holds {count:,} values, beyond Caffe's "
                                                 f"limit of {INT_MAX:,} per blob")


def canonical_axis(axis: int, ndim: int, field: str) -> int:
    """Blob::CanonicalAxisIndex: -ndim <= axis < ndim."""
    require(-ndim <= axis < ndim, field, f"axis {axis} is out of range for a {ndim}-D input")
    return axis + ndim if axis < 0 else axis


def _text(shape: Sequence[int]) -> str:
    return "x".join("N" if d == -1 else str(d) for d in shape)


def shape_text(shape: Sequence[int]) -> str:
    return _text(shape)


def channels(shape: Sequence[int]) -> int:
    """Blob::channels(): axis 1, or 1 for a blob with fewer axes (legacy accessor)."""
    return shape[1] if len(shape) > 1 else 1


def positive_ints(values: List[int]) -> bool:
    return all(v > 0 for v in values)
