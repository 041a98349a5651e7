"""Calibration images for static quantization: a folder of images or an
AnnotatedDatum LMDB, preprocessed exactly as the model's metadata says.

Every problem is a FormatError naming the folder or image, so the quantize
command answers bad input with one line."""
from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Iterator, List

import numpy as np

from caffessd.errors import FormatError
from caffessd.image.preprocess import IMAGE_SUFFIXES, load_image, make_blob, Preprocessing
from caffessd.datasets.lmdb_reader import LmdbDataset
from caffessd.util.dataset_paths import inside_root
from caffessd.util.parallel import ordered_map
from caffessd.util.progress import Progress


def _is_lmdb(path: Path) -> bool:
    return path.is_dir() and (path / "data.mdb").is_file()


def calibration_images(source, count: int, allow_outside: bool = False) -> Iterator[np.ndarray]:
    """Up to `count` BGR images from a folder of image files or an LMDB. A
    file of the folder that is a link leading out of it is refused unless
    `allow_outside` (the dataset rule, caffessd.util.dataset_paths)."""
    source = Path(source)
    if not source.exists():
        raise FormatError(source, "no such file or folder")
    if _is_lmdb(source):
        yield from _lmdb_images(source, count)
    elif source.is_dir():
        yield from _folder_images(source, count, allow_outside)
    else:
        raise FormatError(source, "calibration input must be a folder of images or an LMDB folder")


def _folder_images(folder: Path, count: int, allow_outside: bool = False) -> Iterator[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FormatError(folder, f"no images to calibrate with (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    for path in files[:count]:
        inside_root(path, folder, source=folder, entry=path.name, allow_outside=allow_outside, what="image")
        yield load_image(path)  # an undecodable file stops calibration with its name


def _lmdb_images(path: Path, count: int) -> Iterator[np.ndarray]:
    dataset = LmdbDataset(path)
    try:
        if len(dataset) == 0:
            raise FormatError(path, "the LMDB holds no images to calibrate with")
        for index, entry in enumerate(dataset.entries()):
            if index >= count:
                break
            image = entry.image()
            if image.ndim != 3 or image.shape[2] != 3:
                raise FormatError(path, f"entry {entry.key!r} is not a 3-channel colour image "
                                        f"(shape {tuple(image.shape)}); the detector takes BGR images")
            yield image
    finally:
        dataset.close()


def calibration_blobs(source, count: int, prep: Preprocessing, workers: int = 2,
                      allow_outside: bool = False) -> List[np.ndarray]:
    """The model-input blobs (1x3xHxW float32) of up to `count` images, resized
    and normalised on `workers` threads, with progress on stderr for many."""
    blobs = []
    prepared = ordered_map(lambda image: make_blob(image, prep), calibration_images(source, count, allow_outside),
                           workers)
    with closing(prepared), Progress(count, "calibration images", enabled=count > 10) as progress:
        for blob in prepared:
            blobs.append(blob)
            progress.update()
    if not blobs:
        raise FormatError(source, "no images to calibrate with")
    return blobs


class BlobReader:
    """onnxruntime's CalibrationDataReader protocol over prepared blobs
    (a subclass is made lazily so importing this module needs no onnxruntime)."""

    def __new__(cls, input_name: str, blobs: List[np.ndarray]):
        from onnxruntime.quantization import CalibrationDataReader

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter(blobs)

            def get_next(self):
                blob = next(self.items, None)
                return None if blob is None else {input_name: blob}

            def rewind(self):
                self.items = iter(blobs)

        return _Reader()
