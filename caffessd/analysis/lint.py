"""Every image and box of a dataset checked before hours of training.

Problems stream out one per line as they are found (`FILE:LINE: error:
message [kind]`), and only counters are kept, so memory stays flat whatever
the dataset's size. Errors are what stops make-lmdb or spoils training
(a NaN loss, boxes no prior ever matches); warnings are what silently loses
or skews data.

    errors   bad-annotation   the annotation cannot be read (the reader's own message)
             non-finite       a coordinate is NaN or infinite
             unreadable-image the image file is missing or not an image
             size-mismatch    the annotation's image size is not the image's
             inverted         xmin > xmax or ymin > ymax
             empty-box        zero width or height
             outside-image    a corner outside the image (make-lmdb refuses it)
             normalised-units every box of an image lies within 0..1 though the format is in pixels
             background-label a box labelled 0, the background (an LMDB; MultiBoxLoss aborts)
    warnings unknown-label    a label the labelmap lacks (make-lmdb drops the box)
             duplicate-box    the same label and box twice in one image
             duplicate-image  the same image listed twice
             too-small        smaller than any prior of the net can match (IoU < overlap_threshold)
"""
from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional

from caffessd.analysis.netpriors import load_net_priors
from caffessd.datasets.images import image_size
from caffessd.datasets.lmdb_reader import LmdbDataset
from caffessd.datasets.lmdb_writer import label_id
from caffessd.errors import FormatError
from caffessd.util.progress import Progress

ERROR, WARNING = "error", "warning"
KINDS = {
    "bad-annotation": ERROR, "non-finite": ERROR, "unreadable-image": ERROR, "size-mismatch": ERROR,
    "inverted": ERROR, "empty-box": ERROR, "outside-image": ERROR, "normalised-units": ERROR,
    "background-label": ERROR, "unknown-label": WARNING, "duplicate-box": WARNING, "duplicate-image": WARNING,
    "too-small": WARNING,
}
MAX_CLASSES = 1000          # distinct labels counted one by one; the rest as "(other)"
KEEP_EMPTY_NAMES = 5


@dataclass(frozen=True)
class Problem:
    kind: str
    where: str
    line: Optional[int]
    message: str

    @property
    def severity(self) -> str:
        return KINDS[self.kind]

    def text(self) -> str:
        where = f"{self.where}:{self.line}" if self.line is not None else self.where
        return f"{where}: {self.severity}: {self.message} [{self.kind}]"


@dataclass
class LintOptions:
    """`labels`: the labelmap's names (None: every label is known); `check_images`:
    read each image's header (size, readable); `min_prior_area` and
    `threshold`: the smallest prior's area as a share of the net input and the
    net's overlap_threshold (too-small); `input_hw`/`resize_mode`: the net's."""

    labels: Optional[Mapping[str, int]] = None
    check_images: bool = True
    min_prior_area: Optional[float] = None
    threshold: float = 0.5
    input_hw: Optional[tuple] = None
    resize_mode: str = "WARP"


@dataclass
class LintSummary:
    images: int = 0
    objects: int = 0
    problems: Counter = field(default_factory=Counter)        # kind -> count
    classes: Counter = field(default_factory=Counter)         # label -> objects
    class_images: Counter = field(default_factory=Counter)    # label -> images
    difficult: Counter = field(default_factory=Counter)
    empty_images: int = 0
    empty_names: List[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(count for kind, count in self.problems.items() if KINDS[kind] == ERROR)

    @property
    def warnings(self) -> int:
        return sum(count for kind, count in self.problems.items() if KINDS[kind] == WARNING)

    def lines(self) -> List[str]:
        def listing(severity):
            kinds = [(k, c) for k, c in sorted(self.problems.items()) if KINDS[k] == severity]
            return ", ".join(f"{c} {k}" for k, c in kinds)

        text = [f"{self.images} images, {self.objects} objects, {len(self.classes)} classes; "
                f"{self.errors} errors, {self.warnings} warnings"]
        if self.errors:
            text.append(f"  errors: {listing(ERROR)}")
        if self.warnings:
            text.append(f"  warnings: {listing(WARNING)}")
        if self.empty_images:
            shown = ", ".join(self.empty_names)
            hidden = self.empty_images - len(self.empty_names)
            more = f", ... {hidden} more" if hidden else ""
            text.append(f"  images without objects: {self.empty_images} ({shown}{more})")
        if self.classes:
            text.append(f"  {'class':<24} {'objects':>8} {'images':>8} {'difficult':>9}")
            for name, count in sorted(self.classes.items(), key=lambda kv: (-kv[1], kv[0])):
                text.append(f"  {name[:24]:<24} {count:>8} {self.class_images[name]:>8} {self.difficult[name]:>9}")
        return text


def _where(record) -> str:
    return str(record.annotation or record.path)


class _Linter:
    def __init__(self, options: LintOptions, emit: Callable[[Problem], None]):
        self.options = options
        self.emit = emit
        self.summary = LintSummary()
        self.seen_images = set()

    def report(self, kind: str, where, line, message: str) -> None:
        self.summary.problems[kind] += 1
        self.emit(Problem(kind, str(where), line, message))

    def failed_entry(self, exc: FormatError, name: str) -> None:
        kind = "non-finite" if "finite" in exc.message else "bad-annotation"
        self.summary.images += 1
        self.report(kind, exc.path or name, exc.line, exc.message)

    def record(self, record, dataset) -> None:
        s = self.summary
        s.images += 1
        # 8-byte digests of the names: about 60 bytes an image, the only state that grows.
        digest = int.from_bytes(hashlib.blake2b(record.name.encode("utf-8", "replace"), digest_size=8).digest(), "big")
        if digest in self.seen_images:
            self.report("duplicate-image", _where(record), None, f"{record.name} is listed more than once")
        self.seen_images.add(digest)
        if self.options.check_images:
            self._image(record, dataset)
        if not record.objects:
            s.empty_images += 1
            if len(s.empty_names) < KEEP_EMPTY_NAMES:
                s.empty_names.append(record.name)
            return
        self._objects(record)

    def _image(self, record, dataset) -> None:
        if isinstance(dataset, LmdbDataset):
            return  # the stored image is the datum's own size (inspect-lmdb decodes it)
        try:
            width, height = image_size(record.path)
        except FormatError as exc:
            self.report("unreadable-image", record.path, None, f"{record.name}: {exc.message}")
            return
        if (width, height) != (record.width, record.height):
            self.report("size-mismatch", _where(record), None, f"{record.name}: the annotation says "
                        f"{record.width}x{record.height}, the image is {width}x{height}")

    def _objects(self, record) -> None:
        s, options = self.summary, self.options
        seen, labels_here, small = set(), set(), []
        all_small = record.width > 16 and record.height > 16
        for obj in record.objects:
            s.objects += 1
            attributes = obj.attributes if isinstance(obj.attributes, Mapping) else {}
            line = attributes.get("line")
            where = _where(record)
            label = obj.label if (obj.label in s.classes or len(s.classes) < MAX_CLASSES) else "(other)"
            s.classes[label] += 1
            labels_here.add(label)
            if obj.difficult:
                s.difficult[label] += 1
            x0, y0, x1, y1 = (float(v) for v in obj.box)
            name = f"{record.name}: '{obj.label}' box ({x0:g}, {y0:g}, {x1:g}, {y1:g})"
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                self.report("non-finite", where, line, f"{name} is not finite")
                all_small = False
                continue
            all_small = all_small and max(abs(x0), abs(y0), abs(x1), abs(y1)) <= 1.0
            if attributes.get("label_id") == 0 and "instance_id" in attributes:
                self.report("background-label", where, line, f"{name} has label 0, the background")
            if options.labels is not None and label_id(obj, options.labels) is None and not obj.ignore:
                self.report("unknown-label", where, line, f"{name}: label '{obj.label}' is not in the labelmap "
                                                          "(make-lmdb drops the box)")
            if x0 > x1 or y0 > y1:
                self.report("inverted", where, line, f"{name} is inverted (xmin > xmax or ymin > ymax)")
                continue
            if x0 == x1 or y0 == y1:
                self.report("empty-box", where, line, f"{name} has zero width or height")
                continue
            if not obj.ignore and (x0 < 0 or y0 < 0 or x1 > record.width or y1 > record.height):
                self.report("outside-image", where, line, f"{name} is outside the {record.width}x{record.height} image")
                continue
            key = (obj.label, x0, y0, x1, y1)
            if key in seen:
                self.report("duplicate-box", where, line, f"{name} appears twice")
            seen.add(key)
            small.append((name, where, line, (x0, y0, x1, y1)))
        for label in labels_here:
            s.class_images[label] += 1
        if all_small:
            self.report("normalised-units", _where(record), None,
                        f"{record.name}: every box lies within 0..1 in a {record.width}x{record.height} image: "
                        "the coordinates look normalised, the format expects pixels")
            return
        for args in small:
            self._too_small(record, *args)

    def _too_small(self, record, name, where, line, box) -> None:
        options = self.options
        if options.min_prior_area is None:
            return
        x0, y0, x1, y1 = box
        share = (x1 - x0) * (y1 - y0) / (record.width * record.height)
        if options.resize_mode == "FIT_LARGE_SIZE_AND_PAD" and options.input_hw:
            in_h, in_w = options.input_hw
            scale = min(in_w / record.width, in_h / record.height)
            share *= (record.width * scale) * (record.height * scale) / (in_w * in_h)
        # IoU(box, prior) <= area(box) / area(prior) when the box is the smaller one.
        if share < options.threshold * options.min_prior_area:
            self.report("too-small", where, line, f"{name} covers {100 * share:.3g}% of the net input; no prior "
                                                  f"(the smallest covers {100 * options.min_prior_area:.3g}%) can "
                                                  f"reach IoU {options.threshold:g} with it")


def lint(dataset, options: LintOptions = LintOptions(), emit: Callable[[Problem], None] = lambda p: None,
         progress: bool = True) -> LintSummary:
    """Check every record of `dataset`, calling `emit` for each problem as it is found."""
    linter = _Linter(options, emit)
    total = len(dataset) if hasattr(dataset, "__len__") else None
    with Progress(total, "lint", unit="img", enabled=progress) as bar:
        if hasattr(dataset, "entries") and hasattr(dataset, "record") and hasattr(dataset, "entry_name"):
            for entry in dataset.entries():
                bar.update()
                try:
                    record = dataset.record(entry)
                except FormatError as exc:
                    linter.failed_entry(exc, dataset.entry_name(entry))
                    continue
                linter.record(record, dataset)
        else:
            try:
                for record in dataset:
                    bar.update()
                    linter.record(record, dataset)
            except FormatError as exc:   # a corrupt LMDB entry ends the stream
                linter.failed_entry(exc, str(getattr(dataset, "path", "dataset")))
    return linter.summary


def options_for_net(net_path, input_size=None, **options) -> LintOptions:
    """LintOptions whose too-small check uses the net's smallest prior and threshold."""
    priors = load_net_priors(net_path, input_size)
    smallest = min(w * h / (layer.image_hw[0] * layer.image_hw[1]) for layer in priors.layers for w, h in layer.shapes)
    return LintOptions(min_prior_area=smallest, threshold=float(priors.rule.overlap_threshold),
                       input_hw=priors.input_hw, resize_mode=priors.resize_mode, **options)


def startup_lines(dataset, options: LintOptions = LintOptions(check_images=False), show: int = 10,
                  progress: bool = False) -> List[str]:
    """What make-lmdb and train print before they start: the first `show`
    problems and lint-dataset's summary."""
    shown: List[str] = []

    def keep(problem: Problem) -> None:
        if len(shown) < show:
            shown.append(problem.text())

    summary = lint(dataset, options, keep, progress)
    lines = [f"dataset check: {summary.lines()[0]}"] + summary.lines()[1:]
    if shown:
        total = summary.errors + summary.warnings
        lines += shown + ([f"... {total - len(shown)} more (caffessd lint-dataset lists them all)"]
                          if total > len(shown) else [])
    return lines
