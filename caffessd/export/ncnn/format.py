"""ncnn's two files, byte by byte (docs/developer-guide/param-and-model-file-structure.md
and operation-param-weight-table.md in the ncnn repository).

NAME.param is text: the magic 7767517, then `layer_count blob_count`, then
one line per layer:

    Type  name  n_in n_out  in_blobs...  out_blobs...  id=value ...

where a value is an int, a float (written with a decimal point or exponent,
which is how ncnn's parser tells them apart) or an array `-233xx=n,v1,v2,...`
(id -23300 - k for parameter k).

NAME.bin is the weights of every layer in layer order, each buffer padded to
4 bytes. A buffer the layer loads with ModelBin::load(n, 0) starts with a
4-byte storage flag (0: float32, 0x01306B47: float16); buffers loaded with
load(n, 1) are bare float32. Only the first kind can be stored as float16.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import List, Sequence, Union

import numpy as np

MAGIC = 7767517
FP16_FLAG = 0x01306B47
FP32_FLAG = 0
NAME_LIMIT = 255  # ncnn reads layer types and names with %255s

Value = Union[int, float, Sequence[int], Sequence[float]]


def format_float(value: float) -> str:
    """A float as ncnn's parser wants it (paramdict.cpp): at most 15 characters
    (it scans %15[^,\n ]), a '.' or 'e' so that it is read as a float, at most
    9 digits after the point (it sums them in a 32-bit integer), no 'inf'
    (a leading letter makes a string). Nine significant digits bring the
    float32 back exactly."""
    value = float(np.float32(value))
    if math.isnan(value):
        raise ValueError("NaN cannot be written to an ncnn param file")
    if math.isinf(value):
        value = math.copysign(float(np.finfo(np.float32).max), value)
    return f"{value:.8e}"


def format_param(key: int, value: Value) -> str:
    """`key=value` or `-233xx=n,...` for an array (key 0..19 -> -23300-key)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        if items and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
            text = ",".join(str(int(v)) for v in items)
        else:
            text = ",".join(format_float(v) for v in items)
        return f"{-23300 - key}={len(items)}" + (f",{text}" if items else "")
    if isinstance(value, (bool, int, np.integer)):
        return f"{key}={int(value)}"
    return f"{key}={format_float(value)}"


@dataclass
class Buffer:
    """One weight buffer: `flagged` buffers carry the storage flag and may be float16."""

    data: np.ndarray
    flagged: bool

    def encode(self, fp16: bool) -> bytes:
        values = np.ascontiguousarray(self.data, dtype=np.float32).reshape(-1)
        if not self.flagged:
            return _padded(values.astype("<f4").tobytes())
        if fp16:
            return struct.pack("<I", FP16_FLAG) + _padded(values.astype("<f2").tobytes())
        return struct.pack("<I", FP32_FLAG) + _padded(values.astype("<f4").tobytes())


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def layer_line(kind: str, name: str, bottoms: List[str], tops: List[str], params: dict) -> str:
    """One layer line of NAME.param (params by id, in id order)."""
    fields = [f"{kind:<24}", f"{name:<24}", str(len(bottoms)), str(len(tops)), *bottoms, *tops]
    fields += [format_param(key, params[key]) for key in sorted(params)]
    return " ".join(fields).rstrip()
