"""How much memory a net needs, known from its shapes before anything is
allocated: every blob a layer writes (in-place layers write none), the
PriorBox priors and the learnable weights, at 4 bytes per float.

The limit is what this machine has (physical memory, or what is left under
an address-space limit such as `ulimit -v`), or `--max-memory` /
$CAFFESSD_MAX_MEMORY. A net beyond it is refused at the layer that crosses
it, before numpy, onnx or onnxruntime try and fail with a MemoryError
traceback (or worse, a segfault).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from caffessd.errors import CaffessdError

BYTES_PER_VALUE = 4  # float32, as Caffe and the ONNX export store them
_override: Optional[int] = None
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


class MemoryLimitError(CaffessdError):
    """The net's blobs, priors and weights would not fit in memory."""


def parse_bytes(text: str) -> int:
    """'512M', '4G', '1.5G', '1000000' (bytes) -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise CaffessdError(f"--max-memory must be a positive size such as 512M or 4G, got '{text}'")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def set_limit(limit: Optional[int]) -> None:
    """Process-wide limit in bytes (None: what the machine has)."""
    global _override
    _override = limit


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if size < 1024 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PB"


def _physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> Optional[int]:
    """What an RLIMIT_AS (`ulimit -v`) leaves this process, if one is set."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    used = int(line.split()[1]) * 1024
    except OSError:
        pass
    return max(soft - used, 0)


def limit() -> tuple:
    """(bytes, where the figure comes from)."""
    if _override is not None:
        return _override, "--max-memory"
    env = os.environ.get("CAFFESSD_MAX_MEMORY")
    if env:
        return parse_bytes(env), "CAFFESSD_MAX_MEMORY"
    figures = [(f, why) for f, why in ((_address_space_left(), "the address-space limit (ulimit -v) leaves"),
                                       (_physical_memory(), "this machine has")) if f]
    return min(figures) if figures else (2 ** 63, "unbounded")


def values(shape: Sequence[int], unknown_rows: int = 1) -> int:
    """Element count; a -1 (DetectionOutput's data-dependent rows) counts as `unknown_rows`."""
    total = 1
    for dim in shape:
        total *= unknown_rows if dim == -1 else max(int(dim), 0)
    return total


@dataclass
class MemoryEstimate:
    """Bytes the net needs, split as inspect shows them."""

    blobs: int = 0
    priors: int = 0
    weights: int = 0

    @property
    def total(self) -> int:
        return self.blobs + self.priors + self.weights


class MemoryBudget:
    """Adds up a net's memory layer by layer and refuses the layer that
    takes it past the limit."""

    def __init__(self, source=None):
        self.estimate = MemoryEstimate()
        self.limit, self.why = limit()
        self.source = source

    def add(self, kind: str, what, size: int) -> None:
        """Count `size` values of `kind`; `what` (text, or a function giving it,
        so that the common case builds no string) names them on refusal."""
        setattr(self.estimate, kind, getattr(self.estimate, kind) + size * BYTES_PER_VALUE)
        if self.estimate.total > self.limit:
            what = what() if callable(what) else what
            where = f"{self.source}: " if self.source else ""
            raise MemoryLimitError(
                f"{where}{what} needs {human(size * BYTES_PER_VALUE)}, taking the net to "
                f"{human(self.estimate.total)}, beyond the {human(self.limit)} {self._why()}")

    def _why(self) -> str:
        if self.why.startswith("--") or self.why.isupper():
            return f"limit set by {self.why}"
        return f"{self.why} (set --max-memory to change the limit)"
