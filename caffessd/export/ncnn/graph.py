"""NcnnGraph: the layers, blob names and weight buffers of one ncnn model while
a Caffe net is written out.

Two rules of ncnn shape the bookkeeping (src/net.cpp load_param):
- a blob has one producer, so Caffe's in-place layers (a ReLU writing its
  convolution's blob) need a fresh name per write. The last write of a blob
  keeps the Caffe name, so `extract("conv5")` gives what Caffe calls conv5;
  earlier writes become `<blob>_<layer>`, as ncnn's caffe2ncnn names them;
- a blob has one consumer, so a blob read by several layers goes through a
  Split layer whose tops are `<blob>_splitncnn_<i>` (also caffe2ncnn's names).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from caffessd.errors import CaffessdError
from caffessd.export.ncnn.format import MAGIC, NAME_LIMIT, Buffer, layer_line

_BAD_NAME = re.compile(r"\s")


@dataclass
class NcnnLayer:
    kind: str
    name: str
    bottoms: List[str]
    tops: List[str]
    params: Dict[int, object] = field(default_factory=dict)
    buffers: List[Buffer] = field(default_factory=list)


class NcnnGraph:
    """Layers in order, the Caffe-blob -> ncnn-blob map, and the serialisation."""

    def __init__(self, final_writers: Optional[Dict[str, str]] = None):
        self.layers: List[NcnnLayer] = []
        self._current: Dict[str, str] = {}           # Caffe blob -> ncnn blob holding it now
        self._final_writers = dict(final_writers or {})  # Caffe blob -> layer whose write is the last
        self._blob_names: set = set()
        self._layer_names: set = set()
        self.shapes: Dict[str, tuple] = {}           # ncnn blob -> Caffe shape (batch first)
        self.notes: dict = {}                        # the net's caffessd notes
        self._splits: Dict[str, List[str]] = {}      # blob -> its Split copies
        self._final: Optional[List[NcnnLayer]] = None

    # ------------------------------------------------------------ names

    def _fresh(self, base: str, taken: set) -> str:
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    def layer_name(self, base: str) -> str:
        return self._fresh(base, self._layer_names)

    def blob_name(self, base: str) -> str:
        return self._fresh(base, self._blob_names)

    # ------------------------------------------------------------ blobs

    def add_input(self, blob: str, shape: Sequence[int]) -> None:
        """An Input layer for a Caffe input blob (ncnn has no batch axis)."""
        dims = [int(d) for d in shape[1:]][::-1]    # w, h, c
        top = self._claim(blob)
        self.layers.append(NcnnLayer("Input", self.layer_name(blob), [], [top], dict(enumerate(dims))))
        self._current[blob] = top
        self.shapes[top] = tuple(shape)

    def has_blob(self, blob: str) -> bool:
        return blob in self._current

    def bottom(self, blob: str) -> str:
        if blob not in self._current:
            raise CaffessdError(f"blob '{blob}' is read before any layer produces it")
        return self._current[blob]

    def _claim(self, blob: str) -> str:
        if blob in self._blob_names:
            raise CaffessdError(f"blob name '{blob}' is used twice in the ncnn model")
        self._blob_names.add(blob)
        return blob

    def top(self, layer_name: str, blob: str, shape=None) -> str:
        """The ncnn name for `layer_name`'s write of Caffe blob `blob`."""
        if self._final_writers.get(blob, layer_name) == layer_name and blob not in self._blob_names:
            name = self._claim(blob)
        else:
            name = self.blob_name(f"{blob}_{layer_name}")
        self._current[blob] = name
        if shape is not None:
            self.shapes[name] = tuple(shape)
        return name

    def internal(self, base: str, shape=None) -> str:
        """A blob between the ncnn layers that one Caffe layer becomes."""
        name = self.blob_name(base)
        if shape is not None:
            self.shapes[name] = tuple(shape)
        return name

    # ------------------------------------------------------------ layers

    def add(self, kind: str, name: str, bottoms: List[str], tops: List[str], params: Optional[dict] = None,
            buffers: Sequence[Buffer] = ()) -> NcnnLayer:
        layer = NcnnLayer(kind, self.layer_name(name), list(bottoms), list(tops), dict(params or {}), list(buffers))
        self.layers.append(layer)
        return layer

    def emit(self, info, kind: str, params: Optional[dict] = None, buffers: Sequence[Buffer] = (),
             bottoms: Optional[List[str]] = None) -> NcnnLayer:
        """The usual case: Caffe layer `info` becomes one ncnn layer of `kind`."""
        layer = info.layer
        inputs = [self.bottom(b) for b in (layer.bottom if bottoms is None else bottoms)]
        tops = [self.top(layer.name, t, s) for t, s in zip(layer.top, info.output_shapes)]
        return self.add(kind, layer.name, inputs, tops, params, buffers)

    @staticmethod
    def weights(array: np.ndarray) -> Buffer:
        """A buffer the layer reads with its storage flag (can be float16)."""
        return Buffer(np.asarray(array, np.float32), flagged=True)

    @staticmethod
    def floats(array) -> Buffer:
        """A bare float32 buffer (biases, BatchNorm, Scale, slopes...)."""
        return Buffer(np.asarray(array, np.float32), flagged=False)

    # ------------------------------------------------------------ output

    def with_splits(self) -> List[NcnnLayer]:
        """The layers with a Split after every blob that several layers read
        (computed once: the graph is complete when it is serialised)."""
        if self._final is None:
            self._final = self._insert_splits()
        return self._final

    def _insert_splits(self) -> List[NcnnLayer]:
        readers: Dict[str, int] = {}
        for layer in self.layers:
            for blob in layer.bottoms:
                readers[blob] = readers.get(blob, 0) + 1
        shared = {blob: n for blob, n in readers.items() if n > 1}
        if not shared:
            return list(self.layers)
        copies = {blob: iter(self._split_names(blob, n)) for blob, n in shared.items()}
        out: List[NcnnLayer] = []
        for layer in self.layers:
            bottoms = [next(copies[b]) if b in copies else b for b in layer.bottoms]
            out.append(NcnnLayer(layer.kind, layer.name, bottoms, layer.tops, layer.params, layer.buffers))
            for top in layer.tops:
                if top in shared:
                    names = self._split_names(top, shared[top])
                    out.append(NcnnLayer("Split", self.layer_name(f"splitncnn_{top}"), [top], names))
        return out

    def _split_names(self, blob: str, count: int) -> List[str]:
        names = self._splits
        if blob not in names:
            names[blob] = [self.blob_name(f"{blob}_splitncnn_{i}") for i in range(count)]
        return names[blob]

    def serialize(self, fp16: bool = False):
        """(NAME.param text, NAME.bin bytes)."""
        layers = self.with_splits()
        blobs = []
        seen = set()
        for layer in layers:
            for blob in layer.bottoms + layer.tops:
                if blob not in seen:
                    seen.add(blob)
                    blobs.append(blob)
        for name in [layer.name for layer in layers] + blobs:
            if _BAD_NAME.search(name) or len(name) > NAME_LIMIT or not name:
                raise CaffessdError(f"'{name}' cannot be an ncnn layer or blob name (no spaces, at most "
                                    f"{NAME_LIMIT} characters)")
        lines = [str(MAGIC), f"{len(layers)} {len(blobs)}"]
        lines += [layer_line(l.kind, l.name, l.bottoms, l.tops, l.params) for l in layers]
        weights = b"".join(buffer.encode(fp16) for layer in layers for buffer in layer.buffers)
        return "\n".join(lines) + "\n", weights

    def outputs(self) -> List[str]:
        """Blobs some layer writes and no layer reads (the model's results)."""
        read = {b for layer in self.layers for b in layer.bottoms}
        return [t for layer in self.layers if layer.kind != "Input" for t in layer.tops if t not in read]
