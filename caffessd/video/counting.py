"""Counting tracks that cross a line (`detect --count X0,Y0,X1,Y1`), per class
and direction.

A track's point is the centre of its detection's box. A track crosses the
line when the path from its last point on one side of the line to its next
point on the other side passes through the line segment (not the line's
extension past its ends). Direction: walking along the line from its first
point to its second, `in` is a crossing onto the right-hand side as the
picture shows it (a line drawn left to right counts objects moving down the
picture as `in`, up as `out`); give the points the other way round to swap.
Each crossing counts, so an object that goes back over the line counts once
each way. Only reported tracks count (caffessd.video.tracking), and the
state of a track ends with the track, so memory stays flat."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from caffessd.errors import CaffessdError


@dataclass(frozen=True)
class CountingLine:
    x0: float
    y0: float
    x1: float
    y1: float
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> "CountingLine":
        """'X0,Y0,X1,Y1' in pixels of the video's frames."""
        try:
            values = [float(part) for part in str(text).replace(" ", "").split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise CaffessdError(f"--count takes a line as X0,Y0,X1,Y1 in pixels (e.g. 0,360,1280,360), got '{text}'")
        if values[:2] == values[2:]:
            raise CaffessdError(f"--count: the line's two points are the same ({text})")
        return cls(*values, text=str(text).replace(" ", ""))

    @property
    def points(self) -> Tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def side(self, x: float, y: float) -> float:
        """Positive on the line's right-hand side (walking from its first point
        to its second, on a picture whose y axis points down), negative on its left."""
        return (self.x1 - self.x0) * (y - self.y0) - (self.y1 - self.y0) * (x - self.x0)

    def spans(self, p: Tuple[float, float], q: Tuple[float, float]) -> bool:
        """Whether the line's ends lie on opposite sides of (or on) the path p -> q,
        i.e. the path passes through the segment rather than its extension."""
        def across(ax, ay):
            return (q[0] - p[0]) * (ay - p[1]) - (q[1] - p[1]) * (ax - p[0])
        return across(self.x0, self.y0) * across(self.x1, self.y1) <= 0


class LineCounter:
    """Counts per line, class and direction; `update(detections, live_ids)`
    once per frame with its TrackedDetections and the tracker's live ids."""

    def __init__(self, lines: Sequence[CountingLine]):
        self.lines = list(lines)
        self.counts: List[Dict[str, Dict[str, int]]] = [{} for _ in self.lines]
        # track id -> per line: (last point off the line, its side sign)
        self._state: Dict[int, List[Optional[Tuple[Tuple[float, float], float]]]] = {}

    def update(self, detections: Iterable, live_ids: Optional[set] = None) -> None:
        for det in detections:
            if getattr(det, "track", None) is None:
                continue
            x0, y0, x1, y1 = det.box
            point = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
            state = self._state.setdefault(det.track, [None] * len(self.lines))
            for number, line in enumerate(self.lines):
                side = line.side(*point)
                if side == 0:
                    continue
                last = state[number]
                if last is not None and last[1] * side < 0 and line.spans(last[0], point):
                    direction = "in" if side > 0 else "out"
                    per_class = self.counts[number].setdefault(det.name, {"in": 0, "out": 0})
                    per_class[direction] += 1
                state[number] = (point, side)
        if live_ids is not None:
            for gone in set(self._state) - set(live_ids):
                del self._state[gone]

    def snapshot(self) -> Dict[str, Dict[str, Dict[str, int]]]:
        """{line text: {class name: {"in": n, "out": m}}}, a copy."""
        return {line.text or ",".join(f"{v:g}" for v in line.points):
                {name: dict(directions) for name, directions in sorted(counts.items())}
                for line, counts in zip(self.lines, self.counts)}
