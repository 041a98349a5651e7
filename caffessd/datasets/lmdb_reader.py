"""Reading an LMDB of AnnotatedDatum (make-lmdb's or Caffe's convert_annoset's)
back as ImageRecords: `LmdbDataset(path, labelmap=None)`.

Records carry the stored image's size and boxes in its pixels; `name` is the
key without its `%08d_` prefix, `image_id` the full key, and `path` is
`<lmdb>/<key>` (not a file: decode with `load_image(record)`)."""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Optional

import numpy as np

from caffessd import caffe_pb2
from caffessd.datasets.annotated import datum_pixels, record_from_datum
from caffessd.datasets.records import ImageRecord
from caffessd.errors import FormatError
from caffessd.protoio import read_labelmap
from caffessd.util.lmdb_check import open_checked

_KEY_PREFIX = re.compile(r"^\d{8}_")


class LmdbEntry(NamedTuple):
    key: str
    record: ImageRecord
    datum: caffe_pb2.AnnotatedDatum

    def image(self) -> np.ndarray:
        """The stored image; a FormatError names the database and the entry's key."""
        try:
            return datum_pixels(self.datum.datum, self.key)
        except FormatError as exc:
            raise FormatError(self.record.annotation, f"entry {self.key!r}: {exc.message}") from None


def open_environment(path: Path):
    """The LMDB at `path`, read-only, after caffessd.util.lmdb_check walked it
    (a truncated or corrupt data.mdb is a FormatError, not a SIGBUS)."""
    if not (path / "data.mdb").is_file():
        raise FormatError(path, "not an LMDB folder (no data.mdb)")
    return open_checked(path, subdir=True)


@contextmanager
def lmdb_errors(path: Path, key: Optional[str] = None):
    """An lmdb.Error while reading (LMDB's own corruption checks) as a FormatError."""
    import lmdb

    try:
        yield
    except lmdb.Error as exc:
        where = f"entry {key!r}: " if key else ""
        raise FormatError(path, f"corrupt LMDB: {where}{exc}") from None


class LmdbDataset:
    """Records of an AnnotatedDatum LMDB, streamed in key order.

    `labelmap`: {label id: name}, or a labelmap.prototxt path; without one,
    labels are the ids as text."""

    def __init__(self, path, labelmap=None):
        self.path = Path(path)
        self.env = open_environment(self.path)
        if labelmap is not None and not isinstance(labelmap, Mapping):
            labelmap = {item.label: item.name for item in read_labelmap(labelmap).item}
        self.names: Mapping[int, str] = dict(labelmap or {})
        self.classes = tuple(name for label, name in sorted(self.names.items()) if label != 0)

    def __len__(self) -> int:
        return self.env.stat()["entries"]

    def parse(self, key: bytes, value: bytes) -> LmdbEntry:
        text = key.decode("utf-8", "replace")
        datum = caffe_pb2.AnnotatedDatum()
        try:
            datum.ParseFromString(value)
        except Exception as exc:  # protobuf's DecodeError; message text varies by backend
            raise FormatError(self.path, f"entry {text!r} is not an AnnotatedDatum ({exc})") from None
        name = _KEY_PREFIX.sub("", text, count=1)
        return LmdbEntry(text, record_from_datum(datum, name, self.names, self.path, text), datum)

    def entries(self) -> Iterator[LmdbEntry]:
        with lmdb_errors(self.path), self.env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                yield self.parse(key, value)

    def __iter__(self) -> Iterator[ImageRecord]:
        for entry in self.entries():
            yield entry.record

    def get(self, key: str) -> Optional[LmdbEntry]:
        with lmdb_errors(self.path, key), self.env.begin() as txn:
            value = txn.get(key.encode("utf-8"))
        return None if value is None else self.parse(key.encode("utf-8"), value)

    def load_image(self, record: ImageRecord) -> np.ndarray:
        entry = self.get(record.image_id)
        if entry is None:
            raise FormatError(self.path, f"no entry {record.image_id!r}")
        return entry.image()

    def close(self) -> None:
        self.env.close()
