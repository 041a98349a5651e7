"""Annotated images: boxes and labels drawn on the input photo (detect's
annotated copies) or on a video frame (caffessd.video.sink)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from caffessd.protoio import atomic_write

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def caption(det) -> str:
    """'face 0.99', or 'face 0.99 #7' for a tracked detection (caffessd.video.tracking)."""
    track = getattr(det, "track", None)
    return f"{det.name} {det.score:.2f}" + (f" #{track}" if track is not None else "")


def color(det) -> tuple:
    """A colour per class, or per track when the detection carries one (so ids read apart)."""
    track = getattr(det, "track", None)
    return PALETTE[(det.label if track is None else track) % len(PALETTE)]


def draw_detections(image_bgr: np.ndarray, detections: Sequence, lines: Sequence = ()):
    """A PIL RGB image of `image_bgr` with `detections` (caffessd.runtime.Detection,
    or TrackedDetection) drawn on it, and `lines` ((x0, y0, x1, y1) counting
    lines) in white. The array is not modified."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1]))
    draw = ImageDraw.Draw(image)
    font = _font(min(image.size))
    thickness = max(2, round(min(image.size) / 200))
    for line in lines:
        draw.line(list(line), fill=(255, 255, 255), width=thickness)
    for det in detections:
        fill = color(det)
        x0, y0, x1, y1 = det.box
        draw.rectangle([x0, y0, x1, y1], outline=fill, width=thickness)
        text = caption(det)
        left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
        lift = bottom - top + 4
        ty = y0 - lift if y0 - lift >= 0 else y0
        draw.rectangle([x0, ty, x0 + (right - left) + 6, ty + lift], fill=fill)
        draw.text((x0 + 3, ty + 2), text, fill=(0, 0, 0), font=font)
    return image


_fonts = threading.local()


def _font(side: int):
    """The default font at a size fitting the picture; loaded once per size and
    thread (a video draws thousands of frames of one size; a FreeType face is
    not shared between threads)."""
    from PIL import ImageFont

    size = max(12, side // 30)
    cache = _fonts.__dict__.setdefault("by_size", {})
    if size not in cache:
        cache[size] = ImageFont.load_default(size=size)
    return cache[size]


def annotate(image_bgr: np.ndarray, detections: Sequence, path, lines: Optional[Sequence] = ()) -> Path:
    """Draw `detections` (caffessd.runtime.Detection) on the image and save it."""
    import io

    image = draw_detections(image_bgr, detections, lines or ())
    path = Path(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=92)
    return atomic_write(path, buffer.getvalue())
