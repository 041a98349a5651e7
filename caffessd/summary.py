"""`caffessd inspect`: a per-layer table of a net (type, output shapes,
parameter count, multiply-adds) with totals."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from caffessd.errors import CaffessdError
from caffessd.net import Net
from caffessd.validate.memory import human


@dataclass
class LayerRow:
    name: str
    type: str
    bottoms: List[str]
    tops: List[str]
    output_shapes: List[List[int]]
    params: int
    multiply_adds: int


@dataclass
class NetSummary:
    name: str
    inputs: Dict[str, List[int]]
    layers: List[LayerRow]
    memory: Dict[str, int] = field(default_factory=dict)   # bytes: blobs, priors, weights, total

    @property
    def total_params(self) -> int:
        return sum(row.params for row in self.layers)

    @property
    def total_multiply_adds(self) -> int:
        return sum(row.multiply_adds for row in self.layers)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["total_params"] = self.total_params
        data["total_multiply_adds"] = self.total_multiply_adds
        data["layer_count"] = len(self.layers)
        return data


def summarize(prototxt, weights=None, phase: str = "TEST", input_shape: Optional[List[int]] = None) -> NetSummary:
    """Summarise a net; with `weights`, parameter counts are the stored blob sizes."""
    net = Net.load(prototxt, weights, phase=phase)
    overrides = {}
    if input_shape:
        declared = net.input_shapes()
        first_input = next(iter(declared), None)
        if first_input is not None:
            if len(input_shape) != len(declared[first_input]):
                raise CaffessdError(f"{prototxt}: input shape {'x'.join(map(str, input_shape))} has "
                                    f"{len(input_shape)} dimensions, input '{first_input}' has "
                                    f"{len(declared[first_input])}")
            overrides[first_input] = tuple(input_shape)
    rows = [
        LayerRow(info.name, info.type, list(info.layer.bottom), list(info.layer.top),
                 [list(s) for s in info.output_shapes], info.param_count, info.multiply_adds)
        for info in net.walk(overrides)
    ]
    inputs = {name: list(shape) for name, shape in {**net.input_shapes(), **overrides}.items()}
    estimate = net.memory
    memory = {"blobs": estimate.blobs, "priors": estimate.priors, "weights": estimate.weights,
              "total": estimate.total}
    return NetSummary(net.name, inputs, rows, memory)


def _shape_text(shapes: List[List[int]]) -> str:
    return ", ".join("x".join("N" if d == -1 else str(d) for d in shape) or "scalar" for shape in shapes)


def _human(count: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.2f}{unit}"
    return str(count)


MAX_COLUMN = 40  # longer names and shapes are elided in the middle, so one odd name cannot widen every row


def elide(text: str, width: int = MAX_COLUMN) -> str:
    if len(text) <= width:
        return text
    keep = width - 3
    return text[: (keep + 1) // 2] + "..." + text[len(text) - keep // 2:]


def format_table(summary: NetSummary) -> str:
    header = ("layer", "type", "output shape", "params", "mult-adds")
    rows = [(elide(r.name), elide(r.type), elide(_shape_text(r.output_shapes)), f"{r.params:,}",
             _human(r.multiply_adds)) for r in summary.layers]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)] if rows else [len(h) for h in header]
    def line(values):
        return "  ".join(str(v).ljust(w) if i < 3 else str(v).rjust(w) for i, (v, w) in enumerate(zip(values, widths)))
    out = [f"net: {elide(summary.name) or '(unnamed)'}"]
    out += [f"input {elide(name)}: {'x'.join(map(str, shape))}" for name, shape in summary.inputs.items()]
    out += [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append(line(["-" * w for w in widths]))
    out.append(f"{len(summary.layers)} layers, {summary.total_params:,} parameters, "
               f"{summary.total_multiply_adds:,} multiply-adds ({_human(summary.total_multiply_adds)})")
    if summary.memory:
        mem = summary.memory
        out.append(f"memory: {human(mem['total'])} (blobs {human(mem['blobs'])}, priors {human(mem['priors'])}, "
                   f"weights {human(mem['weights'])}), at 4 bytes per value")
    return "\n".join(out)
