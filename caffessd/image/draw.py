"""Annotated images: boxes and labels drawn on the input photo (detect's
annotated copies) or on a video frame (caffessd.video.outputs).

Boxes and lines are drawn straight into the BGR array with numpy, and only
each caption goes through Pillow (a small picture pasted in), so a 720p video
frame costs about a millisecond instead of a round trip of the whole frame
through a Pillow image."""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from caffessd.util.files import atomic_write

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
WHITE = (255, 255, 255)


def caption(det) -> str:
    """'face 0.99', or 'face 0.99 #7' for a tracked detection (caffessd.video.tracking)."""
    track = getattr(det, "track", None)
    return f"{det.name} {det.score:.2f}" + (f" #{track}" if track is not None else "")


def color(det) -> tuple:
    """An RGB colour per class, or per track when the detection carries one (so ids read apart)."""
    track = getattr(det, "track", None)
    return PALETTE[(det.label if track is None else track) % len(PALETTE)]


def thickness_for(image: np.ndarray) -> int:
    return max(2, round(min(image.shape[:2]) / 200))


def draw_detections(image_bgr: np.ndarray, detections: Sequence, lines: Sequence = ()) -> np.ndarray:
    """Draw `detections` (caffessd.inference.detector.Detection, or TrackedDetection) and
    `lines` ((x0, y0, x1, y1) counting lines, white) into the HxWx3 uint8 BGR
    array, in place; returns it."""
    thickness = thickness_for(image_bgr)
    for line in lines:
        draw_line(image_bgr, line, WHITE, thickness)
    for det in detections:
        fill = color(det)
        draw_box(image_bgr, det.box, fill, thickness)
        draw_caption(image_bgr, caption(det), det.box[0], det.box[1], fill)
    return image_bgr


def draw_box(image: np.ndarray, box, rgb, thickness: int) -> None:
    """A rectangle outline, `thickness` pixels wide inside the box (as Pillow draws it)."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, min(x0, width - 1)), max(0, min(x1, width - 1))
    y0, y1 = max(0, min(y0, height - 1)), max(0, min(y1, height - 1))
    if x1 < x0 or y1 < y0:
        return
    bgr = rgb[::-1]
    image[y0:min(y0 + thickness, y1 + 1), x0:x1 + 1] = bgr
    image[max(y1 - thickness + 1, y0):y1 + 1, x0:x1 + 1] = bgr
    image[y0:y1 + 1, x0:min(x0 + thickness, x1 + 1)] = bgr
    image[y0:y1 + 1, max(x1 - thickness + 1, x0):x1 + 1] = bgr


def draw_line(image: np.ndarray, line, rgb, thickness: int) -> None:
    """A straight line: a square of `thickness` pixels stamped along it."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = line
    steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.rint(np.linspace(x0, x1, steps)).astype(np.int64)
    ys = np.rint(np.linspace(y0, y1, steps)).astype(np.int64)
    half = thickness // 2
    for dy in range(-half, thickness - half):
        for dx in range(-half, thickness - half):
            px, py = xs + dx, ys + dy
            inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
            image[py[inside], px[inside]] = rgb[::-1]


def draw_caption(image: np.ndarray, text: str, x: float, y: float, rgb, text_rgb=(0, 0, 0),
                 above: bool = True) -> int:
    """`text` on a `rgb` label whose top-left corner is at (x, y), or which sits
    on y when `above` (then below y if there is no room at the top edge).
    Returns the label's height."""
    label = _label(text, tuple(rgb), tuple(text_rgb), _font_size(min(image.shape[:2])))
    height, width = image.shape[:2]
    left = int(round(x))
    top = int(round(y)) - (label.shape[0] if above else 0)
    if top < 0:
        top = int(round(y))
    left, top = max(0, min(left, width - 1)), max(0, min(top, height - 1))
    region = image[top:top + label.shape[0], left:left + label.shape[1]]
    region[...] = label[:region.shape[0], :region.shape[1]]
    return label.shape[0]


def _font_size(side: int) -> int:
    return max(12, side // 30)


_fonts = threading.local()


def _font(size: int):
    """The default font at `size`; one per thread (a FreeType face is not
    shared between threads)."""
    from PIL import ImageFont

    cache = _fonts.__dict__.setdefault("by_size", {})
    if size not in cache:
        cache[size] = ImageFont.load_default(size=size)
    return cache[size]


_label_lock = threading.Lock()


def _label(text: str, rgb: tuple, text_rgb: tuple, size: int) -> np.ndarray:
    with _label_lock:    # lru_cache is thread safe, but the rendering below uses a per-thread font
        return _render_label(text, rgb, text_rgb, size)


@lru_cache(maxsize=512)
def _render_label(text: str, rgb: tuple, text_rgb: tuple, size: int) -> np.ndarray:
    """A caption as a small BGR array: text on a filled box (3 px margins)."""
    from PIL import Image, ImageDraw

    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    label = Image.new("RGB", (right - left + 6, bottom - top + 4), rgb)
    ImageDraw.Draw(label).text((3 - left, 2 - top), text, fill=text_rgb, font=font)
    array = np.asarray(label)[:, :, ::-1].copy()
    array.flags.writeable = False
    return array


def annotate(image_bgr: np.ndarray, detections: Sequence, path, lines: Sequence = ()) -> Path:
    """Draw `detections` (caffessd.inference.detector.Detection) on a copy of the image and save it."""
    import io

    from PIL import Image

    drawn = draw_detections(image_bgr.copy(), detections, lines)
    path = Path(path)
    buffer = io.BytesIO()
    Image.fromarray(drawn[:, :, ::-1]).save(buffer, format="PNG" if path.suffix.lower() == ".png" else "JPEG",
                                           quality=92)
    return atomic_write(path, buffer.getvalue())


def drawn(image_bgr: np.ndarray, detections: Sequence, outlines: Sequence = ()) -> np.ndarray:
    """The image as RGB uint8 with `detections` drawn as `annotate` draws them and
    `outlines` ((x0, y0, x1, y1) pixel boxes, e.g. ground truth) as thin white
    rectangles under them (the test images of caffessd.train.summaries)."""
    image = image_bgr.copy()
    for box in outlines:
        draw_box(image, box, WHITE, 1)
    return draw_detections(image, detections)[:, :, ::-1].copy()
