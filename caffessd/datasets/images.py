"""Image files as the SSD fork's cv::imread sees them: size after EXIF
orientation, BGR (or gray) 8-bit pixels. Pillow does the decoding (OpenCV is
only a test-side reference engine)."""
from __future__ import annotations

import io
from typing import Tuple

import numpy as np

from caffessd.errors import FormatError
from caffessd.image.read import decode_image_bytes, displayed_size


def image_size(path) -> Tuple[int, int]:
    """(width, height) of an image file from its header (no full decode), as
    displayed; a decompression bomb is a FormatError (caffessd.image.read)."""
    return displayed_size(path)


def decode_image(data: bytes, path=None, gray: bool = False) -> np.ndarray:
    """Encoded bytes -> HxWx3 BGR uint8 (HxW with `gray`), EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not gray:
        # Colour: exactly as cv::imdecode(IMREAD_COLOR) (16-bit, CMYK, alpha), with the pixel limit.

        return decode_image_bytes(data, path)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.asarray(ImageOps.exif_transpose(image).convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise FormatError(path, f"cannot decode image ({exc.__class__.__name__}: {exc})") from None


def encode_image(pixels: np.ndarray, kind: str) -> bytes:
    """BGR (or gray) pixels -> 'jpg' (quality 95, cv::imencode's default) or 'png' bytes."""
    from PIL import Image

    rgb = pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels[:, :, ::-1])
    buffer = io.BytesIO()
    if kind == "jpg":
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
    elif kind == "png":
        Image.fromarray(rgb).save(buffer, format="PNG", compress_level=3)  # cv::imencode's default level
    else:
        raise ValueError(f"unknown image encoding {kind!r}")
    return buffer.getvalue()
