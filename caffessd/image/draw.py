"""Annotated images: boxes and labels drawn on the input photo."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from caffessd.util.files import atomic_write

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def annotate(image_bgr: np.ndarray, detections: Sequence, path) -> Path:
    """Draw `detections` (caffessd.inference.detector.Detection) on the image and save it."""
    import io

    from PIL import Image

    image = Image.fromarray(drawn(image_bgr, detections))
    path = Path(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=92)
    return atomic_write(path, buffer.getvalue())


def drawn(image_bgr: np.ndarray, detections: Sequence, outlines: Sequence = ()) -> np.ndarray:
    """The image as RGB uint8 with `detections` drawn (box, name and score in the class's
    colour) and `outlines` ((x0, y0, x1, y1) pixel boxes, e.g. ground truth) as thin white
    rectangles under them."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1]))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, min(image.size) // 30))
    thickness = max(2, round(min(image.size) / 200))
    for box in outlines:
        draw.rectangle(list(box), outline=(255, 255, 255), width=1)
    for det in detections:
        color = PALETTE[det.label % len(PALETTE)]
        x0, y0, x1, y1 = det.box
        draw.rectangle([x0, y0, x1, y1], outline=color, width=thickness)
        caption = f"{det.name} {det.score:.2f}"
        left, top, right, bottom = draw.textbbox((x0, y0), caption, font=font)
        lift = bottom - top + 4
        ty = y0 - lift if y0 - lift >= 0 else y0
        draw.rectangle([x0, ty, x0 + (right - left) + 6, ty + lift], fill=color)
        draw.text((x0 + 3, ty + 2), caption, fill=(0, 0, 0), font=font)
    return np.asarray(image)
