"""make-lmdb's engine: a dataset's records -> an LMDB of AnnotatedDatum, as
the SSD fork's tools/convert_annoset.cpp writes it.

Keys are `%08d_` + the list's image field, numbered by position in the
(shuffled) list, so skipped images leave gaps as in convert_annoset.
Decoding, resizing and encoding run on worker threads (ordered_map) while
the main thread writes; at most a few images are in memory at once. The
database is built in a hidden temporary folder beside OUT and renamed when
complete; the map size doubles whenever LMDB says it is full.
"""
from __future__ import annotations

import os
import random
import shutil
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Tuple

import numpy as np

from caffessd.datasets.annotated import add_annotations, new_annotated_datum
from caffessd.datasets.images import decode_image, encode_image
from caffessd.datasets.records import ImageRecord
from caffessd.errors import CaffessdError, FormatError
from caffessd.image.preprocess import resize_linear
from caffessd.util.files import atomic_write_many, read_bytes
from caffessd.util.lmdb_check import looks_like_lmdb
from caffessd.util.parallel import ordered_map
from caffessd.util.progress import Progress

ENCODINGS = ("keep", "jpg", "png", "none")
COMMIT_EVERY = 1000                    # entries per transaction, as convert_annoset
COMMIT_BYTES = 8 << 20                 # ... or this many bytes (held twice: batch + LMDB dirty pages)
INITIAL_MAP_SIZE = 1 << 30             # address space only; the file grows as written
PARTIAL = ".partial-"


@dataclass
class ConvertOptions:
    """convert_annoset's flags. `resize` is (width, height); `encode` 'keep'
    stores the file's own bytes unless the image is resized (then re-encodes
    in the source format), 'jpg'/'png' keep files already in that format
    (convert_annoset's matchExt) and encode the rest, 'none' stores raw CHW."""

    resize: Optional[Tuple[int, int]] = None
    min_dim: int = 0
    max_dim: int = 0
    encode: str = "keep"
    gray: bool = False
    check_label: bool = False
    check_size: bool = False
    ignored: str = "difficult"          # ignore-flagged objects: 'difficult' (as the fork writes COCO crowd) or 'drop'


@dataclass
class Converted:
    index: int
    name: str
    value: Optional[bytes] = None
    original_size: Tuple[int, int] = (0, 0)     # width, height of the image file
    stored_size: Tuple[int, int, int] = (0, 0, 0)  # channels, height, width in the datum
    objects: int = 0
    unknown: Tuple[str, ...] = ()
    dropped: int = 0
    error: Optional[FormatError] = None


@dataclass
class MakeLmdbSummary:
    out: Path
    written: int = 0
    objects: int = 0
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    unknown_labels: Counter = field(default_factory=Counter)
    dropped_ignored: int = 0
    seconds: float = 0.0
    bytes: int = 0
    name_size_file: Optional[Path] = None
    labelmap_written: Optional[Path] = None

    def lines(self) -> List[str]:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        text = [f"wrote {self.written} images, {self.objects} boxes to {self.out} "
                f"({self.bytes / 2**20:.1f} MiB, {self.seconds:.1f} s, {rate:.1f} img/s)"]
        if self.skipped:
            text.append(f"skipped {len(self.skipped)} bad images (--skip-bad)")
        if self.unknown_labels:
            listed = ", ".join(f"{name} ({count})" for name, count in self.unknown_labels.most_common())
            text.append(f"skipped boxes with labels not in the labelmap: {listed}")
        if self.dropped_ignored:
            text.append(f"left out {self.dropped_ignored} ignore regions (crowd/DontCare/invalid) without a usable label or box")
        if self.labelmap_written:
            text.append(f"wrote labelmap {self.labelmap_written}")
        if self.name_size_file:
            text.append(f"wrote name_size_file {self.name_size_file}")
        return text


# ---------------------------------------------------------------- one image

def target_size(width: int, height: int, options: ConvertOptions) -> Tuple[int, int]:
    """The stored size, by ReadImageToCVMat's rules: min/max_dim keep the
    aspect ratio (float32 scale, cv::resize rounding), else resize WxH."""
    if options.min_dim > 0 or options.max_dim > 0:
        scale = np.float32(1)
        if options.min_dim > 0 and min(width, height) < options.min_dim:
            scale = np.float32(options.min_dim) / np.float32(min(width, height))
        if options.max_dim > 0 and int(scale * np.float32(max(width, height))) > options.max_dim:
            scale = np.float32(options.max_dim) / np.float32(max(width, height))
        if scale == 1:
            return width, height
        return int(np.rint(width * float(scale))), int(np.rint(height * float(scale)))
    if options.resize:
        return options.resize
    return width, height


def _source_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return "jpg" if suffix in (".jpg", ".jpeg") else "png" if suffix == ".png" else ""


def convert_image(record: ImageRecord, options: ConvertOptions):
    """(data, channels, stored width, stored height, encoded, original width, original height)."""
    raw = read_bytes(record.path)
    pixels = decode_image(raw, record.path, gray=options.gray)
    height, width = pixels.shape[:2]
    new_width, new_height = target_size(width, height, options)
    resized = (new_width, new_height) != (width, height)
    if resized:
        pixels = resize_linear(pixels, new_width, new_height)
    channels = 1 if options.gray else 3
    if options.encode == "none":
        planar = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return np.ascontiguousarray(planar).tobytes(), channels, new_width, new_height, False, width, height
    source = _source_kind(record.path)
    wanted = (source or "png") if options.encode == "keep" else options.encode
    if not resized and source == wanted:
        data = raw  # the file's own bytes, as convert_annoset's ReadFileToDatum
    else:
        data = encode_image(pixels, wanted)
    return data, channels, new_width, new_height, True, width, height


def label_id(obj, label_of: Mapping[str, int]) -> Optional[int]:
    """The object's label in the labelmap: by name, else (COCO) by its
    category id as text, as the SSD fork's own COCO labelmap names them."""
    if obj.label in label_of:
        return label_of[obj.label]
    category = obj.attributes.get("category_id") if isinstance(obj.attributes, Mapping) else None
    return label_of.get(str(category)) if category is not None else None


def check_objects(record: ImageRecord, label_of: Mapping[str, int], options: ConvertOptions):
    """(kept (label, object) pairs, unknown label names, dropped ignore regions).
    A box that is inverted, empty or outside the image is a FormatError."""
    kept, unknown, dropped = [], [], 0
    where = record.annotation or record.path
    for obj in record.objects:
        xmin, ymin, xmax, ymax = obj.box
        label = label_id(obj, label_of)
        if obj.ignore:
            if options.ignored == "drop" or label is None:
                dropped += 1
                continue
            xmin, ymin = max(xmin, 0.0), max(ymin, 0.0)
            xmax, ymax = min(xmax, record.width), min(ymax, record.height)
            if xmin >= xmax or ymin >= ymax:
                dropped += 1
                continue
            kept.append((label, type(obj)(obj.label, (xmin, ymin, xmax, ymax), True, True, obj.attributes)))
            continue
        line = obj.attributes.get("line") if isinstance(obj.attributes, Mapping) else None
        if xmin >= xmax or ymin >= ymax:
            raise FormatError(where, f"{record.name}: box {obj.box} of '{obj.label}' has xmin >= xmax or ymin >= ymax", line)
        if xmin < 0 or ymin < 0 or xmax > record.width or ymax > record.height:
            raise FormatError(where, f"{record.name}: box {obj.box} of '{obj.label}' is outside the "
                                     f"{record.width}x{record.height} image", line)
        if label is None:
            if options.check_label:
                raise FormatError(where, f"{record.name}: label '{obj.label}' is not in the labelmap (--check-label)", line)
            unknown.append(obj.label)
            continue
        kept.append((label, obj))
    return kept, tuple(unknown), dropped


def convert_entry(dataset, entry, index: int, label_of: Mapping[str, int], options: ConvertOptions) -> Converted:
    """One list entry -> its serialized AnnotatedDatum, or the error that makes it bad."""
    name = dataset.entry_name(entry)
    try:
        record = dataset.record(entry)
        name = record.name
        kept, unknown, dropped = check_objects(record, label_of, options)
        data, channels, width, height, encoded, file_width, file_height = convert_image(record, options)
        if (file_width, file_height) != (record.width, record.height):
            raise FormatError(record.annotation or record.path,
                              f"{record.name}: the annotation says {record.width}x{record.height}, "
                              f"the image is {file_width}x{file_height}")
        datum = new_annotated_datum(data, channels, width, height, encoded)
        add_annotations(datum, kept, record.width, record.height)
        return Converted(index, name, datum.SerializeToString(), (file_width, file_height), (channels, height, width),
                         len(kept), unknown, dropped)
    except FormatError as exc:
        return Converted(index, name, error=exc)


# ---------------------------------------------------------------- the database

def partial_path(out: Path) -> Path:
    return out.parent / f".{out.name}{PARTIAL}{os.getpid()}"


def remove_stale_partials(out: Path) -> None:
    """Temporary folders of earlier runs that were killed (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}{PARTIAL}*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LmdbSink:
    """Batched puts into a new LMDB whose map size doubles when full.

    LMDB keeps every page it touched mapped until the environment closes, so
    resident memory would grow with the database (about 7 KiB per entry);
    reopening it every REOPEN_ENTRIES entries keeps the peak RSS flat."""

    REOPEN_ENTRIES = 2000

    def __init__(self, path: Path, map_size: int = INITIAL_MAP_SIZE):
        import lmdb

        self._lmdb = lmdb
        self.path = path
        path.mkdir(parents=True)
        self.map_size = map_size
        self.env = self._open()
        self.batch: List[Tuple[bytes, bytes]] = []
        self.batch_bytes = 0
        self.since_open = 0

    def _open(self):
        return self._lmdb.open(str(self.path), map_size=self.map_size, subdir=True, meminit=False)

    def put(self, key: str, value: bytes) -> None:
        self.batch.append((key.encode("utf-8"), value))
        self.batch_bytes += len(value)
        if len(self.batch) >= COMMIT_EVERY or self.batch_bytes >= COMMIT_BYTES:
            self.commit()

    def commit(self) -> None:
        written = len(self.batch)
        while self.batch:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self.batch:
                        txn.put(key, value)
            except self._lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
                continue
            self.batch, self.batch_bytes = [], 0
        self.since_open += written
        if self.since_open >= self.REOPEN_ENTRIES:
            self.env.close()
            self.env = self._open()
            self.since_open = 0

    def close(self) -> int:
        self.commit()
        self.env.sync(True)
        used = self.env.info()["last_pgno"] * self.env.stat()["psize"]
        self.env.close()
        return used


def make_lmdb(dataset, out, label_of: Mapping[str, int], options: ConvertOptions = ConvertOptions(),
              shuffle: bool = False, seed: int = 0, skip_bad: bool = False, overwrite: bool = False,
              name_size_file=None, extra_files=(), workers: Optional[int] = None, progress: bool = True,
              warn: Callable[[str], None] = lambda line: None, map_size: int = INITIAL_MAP_SIZE) -> MakeLmdbSummary:
    """Write `dataset` (a FileDataset) to the LMDB folder `out`.

    `label_of` maps label names to ids. A bad image (FormatError) stops the
    run, leaving nothing at `out`, unless `skip_bad` (then `warn` gets one
    line for it). `name_size_file` gets `name height width` lines of the
    written images (the test net's name_size_file); `extra_files` are
    (path, text) pairs written with the LMDB (a new labelmap)."""
    out = Path(out)
    if options.encode not in ENCODINGS:
        raise CaffessdError(f"unknown encoding {options.encode!r} (one of {', '.join(ENCODINGS)})")
    if out.exists() and not overwrite:
        raise FormatError(out, "already exists (give --overwrite to replace it)")
    if out.exists():
        require_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    entries = dataset.entries()
    order = list(range(len(entries)))
    if shuffle:
        random.Random(seed).shuffle(order)
    workers = workers if workers is not None else max(1, min(8, os.cpu_count() or 1))
    summary = MakeLmdbSummary(out=out)
    partial = partial_path(out)
    sizes_tmp = partial.with_name(partial.name + ".name_size") if name_size_file else None
    start = time.perf_counter()
    sink = LmdbSink(partial, map_size)
    try:
        first_size = None
        sizes = open(sizes_tmp, "w") if sizes_tmp else None
        try:
            jobs = ((index, entries[index]) for index in order)
            results = ordered_map(lambda job: convert_entry(dataset, job[1], job[0], label_of, options), jobs,
                                  workers=workers)
            # closing: an error leaves the conversion threads stopped here, not to the garbage collector.
            with closing(results), Progress(len(order), "make-lmdb", unit="img", enabled=progress) as bar:
                for position, result in enumerate(results):
                    bar.update(extra=f"{summary.objects + result.objects} boxes, {len(summary.skipped)} skipped")
                    if result.error is None and options.check_size:
                        if first_size is None:
                            first_size = result.stored_size
                        elif result.stored_size != first_size:
                            result.error = FormatError(result.name, f"stored size {result.stored_size} differs from the "
                                                                    f"first image's {first_size} (--check-size)")
                    if result.error is not None:
                        if not skip_bad:
                            raise result.error
                        summary.skipped.append((result.name, str(result.error)))
                        warn(f"skipped {result.error}")
                        continue
                    sink.put(f"{position:08d}_{result.name}", result.value)
                    summary.written += 1
                    summary.objects += result.objects
                    summary.unknown_labels.update(result.unknown)
                    summary.dropped_ignored += result.dropped
                    if sizes:
                        width, height = result.original_size
                        sizes.write(f"{Path(result.name).stem} {height} {width}\n")
        finally:
            if sizes:
                sizes.close()
        summary.bytes = sink.close()
        _install(partial, out, overwrite)
        if extra_files:
            atomic_write_many(list(extra_files))
        if sizes_tmp:
            os.replace(sizes_tmp, name_size_file)
            summary.name_size_file = Path(name_size_file)
    except BaseException:
        try:
            sink.env.close()
        except Exception:
            pass
        shutil.rmtree(partial, ignore_errors=True)
        if sizes_tmp and sizes_tmp.exists():
            sizes_tmp.unlink()
        raise
    summary.seconds = time.perf_counter() - start
    return summary


LMDB_FILES = ("data.mdb", "lock.mdb")


def require_replaceable(out: Path) -> None:
    """--overwrite replaces an LMDB, nothing else: a folder holding only
    data.mdb (with LMDB's meta page) and lock.mdb. Any other folder or file
    (a dataset given as the output by mistake) is refused, never removed."""
    if not out.is_dir():
        raise FormatError(out, "--overwrite replaces only an LMDB folder, and this is a file")
    others = sorted(p.name for p in out.iterdir() if p.name not in LMDB_FILES)
    if others or not looks_like_lmdb(out):
        what = f"it holds {others[0]!r}" + (f" and {len(others) - 1} more" if len(others) > 1 else "") if others \
            else "it holds no LMDB data.mdb"
        raise FormatError(out, f"--overwrite replaces only an LMDB folder (data.mdb, lock.mdb); {what}, so it "
                               f"is left alone")


def _install(partial: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished database into place (replacing an old one with `overwrite`)."""
    old = None
    if out.exists():
        if not overwrite:
            raise FormatError(out, "already exists (give --overwrite to replace it)")
        require_replaceable(out)  # again: the folder may have changed during the run
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(partial, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
