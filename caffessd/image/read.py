"""Reading image files the way `cv2.imread(path, cv2.IMREAD_COLOR)` does, with
Pillow instead of OpenCV: the HxWx3 uint8 BGR array a Caffe/OpenCV pipeline
would see, so boxes refer to the image as displayed.

What imread does, and so what happens here (each case is checked against
OpenCV 4.x in tests/test_imageread.py):
- EXIF orientation is applied (JPEG, PNG, WebP, TIFF).
- Grey, 1-bit and palette images become three equal or looked-up channels.
- Alpha is dropped without compositing; RGBA TIFFs come premultiplied, because
  OpenCV reads them through libtiff's RGBA interface.
- 16-bit samples keep their high byte (libpng's and OpenCV's PNM/grey-TIFF
  rule); 16-bit colour TIFFs (OpenCV rounds v/257) and PPMs (Pillow rounds
  v*255/65535) differ from imread by at most 1 level.
- CMYK JPEGs use OpenCV's own integer CMYK->BGR formula on libjpeg's (Adobe,
  inverted) samples; CMYK TIFFs use libtiff's ((255-k)(255-c)/255).

Decompression bombs: an image whose header claims more pixels than
`max_pixels` (default DEFAULT_MAX_PIXELS, or the CAFFESSD_MAX_PIXELS variable;
0 = no limit) is refused with a FormatError before it is decoded.
"""
from __future__ import annotations

import os
import re
import threading
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from caffessd.errors import CaffessdError, FormatError

DEFAULT_MAX_PIXELS = 200_000_000   # a 200-megapixel photo (16320x12240) still fits
MAX_PIXELS_ENV = "CAFFESSD_MAX_PIXELS"
ORIENTATION_TAG = 0x0112

_pillow_lock = threading.Lock()


def max_pixels_limit(value: Optional[int] = None) -> Optional[int]:
    """The pixel limit in force: `value` if given, else $CAFFESSD_MAX_PIXELS,
    else DEFAULT_MAX_PIXELS. 0 (or a negative value) means no limit -> None."""
    if value is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
        if not text:
            value = DEFAULT_MAX_PIXELS
        else:
            try:
                value = int(float(text))
            except ValueError:
                raise CaffessdError(f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r} is not a whole number "
                                    "of pixels (0 = no limit)") from None
    return int(value) if value and value > 0 else None


def read_image(path, max_pixels: Optional[int] = None) -> np.ndarray:
    """An HxWx3 uint8 BGR array, as cv2.imread(path, IMREAD_COLOR) gives it.

    Raises FormatError (naming the file) for a missing, undecodable or
    too-large image."""
    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such file")
    return _decode(path, path, max_pixels)


def displayed_size(path, max_pixels: Optional[int] = None):
    """(width, height) of an image file as displayed (EXIF orientation 5-8 swap
    them), from its header only; the pixel limit applies as in read_image."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "no such image file")
    limit = max_pixels_limit(max_pixels)
    image = _open(path, path, limit)
    try:
        _check_size(path, image.size, limit)
        width, height = image.size
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except FormatError:
        raise
    except Exception as exc:
        raise FormatError(path, f"cannot read image header ({exc.__class__.__name__}: {exc})") from None
    finally:
        image.close()
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def decode_image_bytes(data: bytes, name=None, max_pixels: Optional[int] = None) -> np.ndarray:
    """The same for an encoded image held in memory (cv2.imdecode(IMREAD_COLOR));
    `name` is what errors report (e.g. the LMDB key)."""
    import io

    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source, name, max_pixels: Optional[int]) -> np.ndarray:
    limit = max_pixels_limit(max_pixels)
    image = _open(source, name, limit)
    try:
        _check_size(name, image.size, limit)
        image.load()
        bgr = _to_bgr8(image)
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except FormatError:
        raise
    except Exception as exc:  # Pillow's decoders raise OSError, ValueError, SyntaxError, EOFError ...
        raise FormatError(name, f"cannot decode image ({exc.__class__.__name__}: {exc})") from None
    finally:
        image.close()
    return np.ascontiguousarray(orient(bgr, orientation))


def _open(source, path, limit: Optional[int]):
    from PIL import Image, UnidentifiedImageError

    _lift_pillow_ceiling(limit)
    try:
        # Pillow warns (DecompressionBombWarning) for images above its own
        # ceiling; ours is checked right after, so the warning is noise.
        # catch_warnings is process-wide state: the lock keeps decode-ahead
        # threads from restoring each other's filters (opening reads only the header).
        with _pillow_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source)
    except Image.DecompressionBombError as exc:
        # Over twice Pillow's ceiling: it stops in the header, with the size in its message.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise FormatError(path, f"image has {size}, more than the limit (a decompression bomb?); "
                                f"{_limit_hint(limit)}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise FormatError(path, f"cannot decode image ({exc.__class__.__name__}: {exc})") from None


def _lift_pillow_ceiling(limit: Optional[int]) -> None:
    """Pillow refuses images above twice Image.MAX_IMAGE_PIXELS on its own (a
    process-wide setting); raise it to our limit so that ours decides. It is
    only ever raised, never lowered, so other Pillow users lose nothing they
    had not asked caffessd for."""
    from PIL import Image

    with _pillow_lock:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and (limit is None or current < limit):
            Image.MAX_IMAGE_PIXELS = None if limit is None else limit


def _check_size(path, size, limit: Optional[int]) -> None:
    width, height = size
    if limit is not None and width * height > limit:
        raise FormatError(path, f"image is {width}x{height} = {width * height:,} pixels, more than the limit "
                                f"(a decompression bomb?); {_limit_hint(limit)}")


def _limit_hint(limit: Optional[int]) -> str:
    return (f"the limit is {limit:,} pixels: raise it with --max-pixels or {MAX_PIXELS_ENV} (0 = no limit)"
            if limit else f"no limit is set ({MAX_PIXELS_ENV}=0)")


def _to_bgr8(image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        # Pillow packs its pixels straight into BGR order in C: far cheaper
        # than flipping an RGB array's channels into a new contiguous one.
        bgr = np.frombuffer(bytearray(image.tobytes("raw", "BGR")), np.uint8)
        return bgr.reshape(image.height, image.width, 3)
    elif mode in ("L", "1"):
        grey = np.asarray(image.convert("L") if mode == "1" else image)
        return np.repeat(grey[:, :, None], 3, axis=2)
    elif mode.startswith("I"):      # I;16, I;16B, I;16L (16-bit PNG, TIFF), I (16-bit PGM)
        grey = (np.clip(np.asarray(image), 0, 65535).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    elif mode == "RGBA" and image.format == "TIFF":
        rgba = np.asarray(image).astype(np.uint16)
        rgb = ((rgba[:, :, :3] * rgba[:, :, 3:] + 127) // 255).astype(np.uint8)
    elif mode in ("RGBA", "RGBa", "RGBX"):
        rgb = np.asarray(image)[:, :, :3]
    elif mode in ("LA", "La"):
        grey = np.asarray(image)[:, :, 0]
        return np.repeat(grey[:, :, None], 3, axis=2)
    elif mode == "CMYK":
        rgb = _cmyk_to_rgb(np.asarray(image), image.format)
    else:                           # P, PA (palette looked up, alpha dropped), YCbCr, LAB, HSV, F
        rgb = np.asarray(image.convert("RGB"))
    return rgb[:, :, ::-1]


def _cmyk_to_rgb(ink: np.ndarray, image_format: Optional[str]) -> np.ndarray:
    ink = ink.astype(np.int32)
    if image_format == "JPEG":
        # libjpeg hands OpenCV Adobe-inverted samples (Pillow re-inverts them
        # to ink amounts); OpenCV then computes k - ((255 - c) * k >> 8).
        raw = 255 - ink
        k = raw[:, :, 3:]
        rgb = k - (((255 - raw[:, :, :3]) * k) >> 8)
    else:
        # libtiff's RGBA interface: (255 - k) * (255 - c) / 255, truncated.
        rgb = ((255 - ink[:, :, 3:]) * (255 - ink[:, :, :3])) // 255
    return rgb.astype(np.uint8)


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """`image` (HxWxC) as displayed, given its EXIF orientation (1..8)."""
    if orientation in (5, 6, 7, 8):
        # 6: rotate 90 clockwise, 8: 90 counter-clockwise, 5/7: the two diagonal mirrors.
        image = {5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
                 7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}[orientation](image)
    elif orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    return image
