"""Turning image files into the input blob a Caffe SSD net expects.

Caffe SSD nets take a 1x3xHxW float blob, BGR channel order by default,
computed as (pixel - mean) * scale after resizing the whole image to the net's
input size (Caffe's WARP resize).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from caffessd.errors import FormatError
from caffessd.image.read import read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass
class Preprocessing:
    """How an image becomes the net's input blob. `mean` is per channel in the
    net's channel order (BGR unless `rgb`)."""

    width: int
    height: int
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    rgb: bool = False

    def to_metadata(self) -> dict:
        """The keys caffessd.onnxconv stores in an exported model's metadata."""
        return {"mean": list(self.mean), "scale": self.scale, "input_size": [self.width, self.height],
                "channel_order": "RGB" if self.rgb else "BGR"}

    @classmethod
    def from_metadata(cls, values: dict) -> "Preprocessing":
        width, height = values["input_size"]
        mean = values.get("mean", [0.0])
        mean = tuple(float(v) for v in (mean * 3 if len(mean) == 1 else mean))
        return cls(width=int(width), height=int(height), mean=mean, scale=float(values.get("scale", 1.0)),
                   rgb=values.get("channel_order", "BGR") == "RGB")


def parse_mean(text: str) -> Tuple[float, float, float]:
    """'127.5' or '104,117,123' -> a 3-tuple."""
    values = [float(v) for v in text.replace(" ", "").split(",") if v]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"mean needs 1 or 3 values, got {len(values)}")
    return tuple(values)


def load_image(path, max_pixels=None) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 array in BGR order, as
    cv2.imread(IMREAD_COLOR) does (see caffessd.image.read)."""
    return read_image(path, max_pixels)


# cv::resize INTER_LINEAR on 8-bit images is fixed point: 11-bit weights from
# float32 offsets, a horizontal pass in int32, then a vertical pass that drops
# 4 bits, keeps the high half of a 16x16-bit product and rounds off 2 bits (the
# SIMD path every x86/ARM build takes). Copying those steps gives OpenCV's
# pixels exactly, so caffessd's input blobs equal Caffe's and cv2.dnn's.
RESIZE_COEF_BITS = 11
RESIZE_COEF_SCALE = 1 << RESIZE_COEF_BITS


def _source_taps(src_size: int, dst_size: int):
    """Left source index and fraction of each output pixel (half-pixel centres)."""
    scale = src_size / dst_size
    pos = ((np.arange(dst_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    index = np.floor(pos).astype(np.int64)
    return index, pos - index.astype(np.float32)


def _weights(fraction: np.ndarray):
    one = np.float32(RESIZE_COEF_SCALE)
    return (np.rint((np.float32(1) - fraction) * one).astype(np.int32),
            np.rint(fraction * one).astype(np.int32))


def _column_taps(src_w: int, dst_w: int):
    # Columns past either border repeat the edge pixel with weight 1 (OpenCV
    # zeroes the fraction there); rows are clamped but keep their fraction.
    index, fraction = _source_taps(src_w, dst_w)
    outside = (index < 0) | (index >= src_w - 1)
    fraction[outside] = 0
    index = np.clip(index, 0, src_w - 1)
    return (index, np.minimum(index + 1, src_w - 1), *_weights(fraction))


def _row_taps(src_h: int, dst_h: int):
    index, fraction = _source_taps(src_h, dst_h)
    return (np.clip(index, 0, src_h - 1), np.clip(index + 1, 0, src_h - 1), *_weights(fraction))


def resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an 8-bit HxW or HxWxC image exactly as cv2.resize(..., INTER_LINEAR)
    does (bilinear, half-pixel centres, no anti-aliasing; an exact 2x shrink
    averages 2x2 blocks, as OpenCV switches to INTER_AREA there)."""
    src = np.asarray(image)
    if src.dtype != np.uint8:
        raise ValueError(f"resize_linear takes uint8 images, got {src.dtype}")
    if width < 1 or height < 1:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    planar = src.ndim == 2
    if planar:
        src = src[:, :, None]
    src_h, src_w = src.shape[:2]
    if (src_w, src_h) == (width, height):
        out = src.copy()
    elif (src_w, src_h) == (2 * width, 2 * height):
        blocks = src.reshape(height, 2, width, 2, -1).astype(np.int32).sum(axis=(1, 3))
        out = ((blocks + 2) >> 2).astype(np.uint8)
    else:
        out = _resize_general(np.ascontiguousarray(src), width, height)
    return out[:, :, 0] if planar else out


def _resize_general(src: np.ndarray, width: int, height: int) -> np.ndarray:
    """The fixed-point INTER_LINEAR steps on a C-contiguous HxWxC uint8 image.

    Each image is seen as rows of W*C bytes: picking the source rows, then the
    source bytes within them (one index per output byte), keeps every numpy
    step a gather or element-wise op over whole contiguous rows, about 20x
    faster than broadcasting weights over a trailing axis of 3."""
    src_h, src_w, channels = src.shape
    left, right, a0, a1 = _column_taps(src_w, width)
    top, bottom, b0, b1 = _row_taps(src_h, height)
    channel = np.arange(channels)
    left_bytes = (left[:, None] * channels + channel).reshape(-1)
    right_bytes = (right[:, None] * channels + channel).reshape(-1)
    a0, a1 = np.repeat(a0, channels), np.repeat(a1, channels)
    rows = src.reshape(src_h, src_w * channels)

    def horizontal(row_index):  # int32 rows scaled by 2**11, then 4 bits dropped
        picked = rows[row_index]
        mixed = picked[:, left_bytes].astype(np.int32)
        mixed *= a0
        right_part = picked[:, right_bytes].astype(np.int32)
        right_part *= a1
        mixed += right_part
        mixed >>= 4
        return mixed

    upper = horizontal(top)
    upper *= b0[:, None]
    upper >>= 16
    lower = horizontal(bottom)
    lower *= b1[:, None]
    lower >>= 16
    upper += lower
    upper += 2
    upper >>= 2
    return np.clip(upper, 0, 255, out=upper).astype(np.uint8).reshape(height, width, channels)


def make_blob(image_bgr: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Resize (as cv::resize INTER_LINEAR, like Caffe's test transform and
    cv2.dnn.blobFromImage) and normalise one BGR image into a 1x3xHxW float32 blob."""
    bgr = image_bgr
    if bgr.shape[0] != prep.height or bgr.shape[1] != prep.width:
        bgr = resize_linear(bgr, prep.width, prep.height)
    pixels = bgr[:, :, ::-1] if prep.rgb else bgr
    # (pixel - mean) * scale in float32, written straight into the CHW blob:
    # one pass over the output instead of three.
    blob = np.empty((1, pixels.shape[2], pixels.shape[0], pixels.shape[1]), np.float32)
    np.subtract(pixels.transpose(2, 0, 1), np.asarray(prep.mean, dtype=np.float32)[:, None, None], out=blob[0])
    blob *= np.float32(prep.scale)
    return blob


def expand_image_args(args: Sequence[str], missing: Optional[list] = None) -> list:
    """Files, folders (their images, sorted) and glob patterns -> image paths.

    A name that matches nothing is an error naming it; with a `missing` list
    the errors are appended there instead and the other names still count
    (detect processes the images that exist and reports the rest)."""
    import glob

    found = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.exists():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(arg, recursive=True)) if any(ch in arg for ch in "*?[") \
                else None
            if matches:
                found.extend(matches)
                continue
            error = FormatError(arg, "pattern matches no file") if matches is not None else \
                FormatError(path, "no such file")
            if missing is None:
                raise error
            missing.append(error)
    return found
