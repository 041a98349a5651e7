"""A generated detection dataset: filled shapes on noisy backgrounds, in VOC layout.

For checking a set-up end to end without downloading anything: make-lmdb reads
it as any VOC folder, a small net learns it in minutes on a CPU, and since the
boxes are exact, a trained detector's mAP on it says whether training works.

Colours are drawn independently of the class, so a net has to learn the
shape, not the colour. Every object's box is the tight box of its drawn
pixels (VOC's 1-based inclusive corners).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from caffessd.datasets.labelmap import labelmap_from_dataset, labelmap_text as text

SHAPES: Tuple[str, ...] = ("circle", "square", "triangle")
# Other classes for a second, disjoint dataset (e.g. fine-tuning a net trained on SHAPES).
EXTRA_SHAPES: Tuple[str, ...] = ("diamond", "cross", "ring")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour gradient plus per-pixel noise, uint8 (H, W, 3)."""
    corners = rng.uniform(40, 215, (2, 2, 3))
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    s = np.linspace(0.0, 1.0, size)[None, :, None]
    top = corners[0, 0] * (1 - s) + corners[0, 1] * s
    bottom = corners[1, 0] * (1 - s) + corners[1, 1] * s
    image = top * (1 - t) + bottom * t + rng.normal(0, 18, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _distinct_colour(rng: np.random.Generator, under: np.ndarray, base=None) -> Tuple[int, int, int]:
    """A random colour at least 90 away (sum of channel differences) from the mean colour
    beneath it; with `base`, one within 40 of that colour in each channel."""
    mean = under.reshape(-1, 3).mean(axis=0)
    for _ in range(100):
        if base is None:
            colour = rng.integers(0, 256, 3)
        else:
            colour = np.clip(np.asarray(base) + rng.integers(-40, 41, 3), 0, 255)
        if np.abs(colour - mean).sum() >= 90:
            break
    return tuple(int(c) for c in colour)


# Class colours of colour_hint: red, green, blue, then yellow, magenta, cyan.
HINT_COLOURS = ((220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (220, 40, 220), (40, 220, 220))


def _draw(draw, shape: str, box: Tuple[int, int, int, int], colour, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=colour)
    elif shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=colour)
    elif shape == "triangle":  # apex on the top edge at a random position, base on the bottom edge
        apex = int(rng.integers(x0, x1 + 1))
        draw.polygon([(apex, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "diamond":  # corners at the middle of each edge
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "cross":  # a plus sign whose arms are a third of the box thick
        tx, ty = max(1, (x1 - x0) // 3), max(1, (y1 - y0) // 3)
        draw.rectangle([x0 + tx, y0, x1 - tx, y1], fill=colour)
        draw.rectangle([x0, y0 + ty, x1, y1 - ty], fill=colour)
    elif shape == "ring":  # an ellipse outline a quarter of the smaller side thick
        draw.ellipse([x0, y0, x1, y1], outline=colour, width=max(2, min(x1 - x0, y1 - y0) // 4))
    else:
        raise ValueError(f"unknown shape '{shape}' (known: {', '.join(SHAPES + EXTRA_SHAPES)})")


def _overlap(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / max(smaller, 1)


def shapes_image(rng: np.random.Generator, size: int, max_objects: int = 2,
                 scale: Tuple[float, float] = (0.25, 0.6), shapes: Sequence[str] = SHAPES,
                 colour_hint: bool = False):
    """One image (uint8 RGB, size x size) and its objects [(shape, (x0, y0, x1, y1))],
    pixel corners inclusive; objects overlap each other by at most 20% of the smaller one.
    `colour_hint`: each class also has its own colour (HINT_COLOURS, jittered), an easier
    task that a small net learns from scratch in a few hundred iterations."""
    from PIL import Image, ImageDraw

    pixels = _background(rng, size)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    objects: List[Tuple[str, Tuple[int, int, int, int]]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            side = int(round(rng.uniform(*scale) * size))
            w = int(round(side * rng.uniform(0.8, 1.25)))
            h = side if rng.random() < 0.5 else int(round(side * rng.uniform(0.8, 1.25)))
            w, h = min(w, size - 1), min(h, size - 1)
            x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            box = (x0, y0, x0 + w, y0 + h)
            if all(_overlap(box, other) <= 0.2 for _, other in objects):
                break
        else:
            continue
        shape = shapes[int(rng.integers(len(shapes)))]
        if shape == "square":  # a square stays square
            box = (x0, y0, x0 + min(w, h), y0 + min(w, h))
        base = HINT_COLOURS[shapes.index(shape) % len(HINT_COLOURS)] if colour_hint else None
        _draw(draw, shape, box, _distinct_colour(rng, pixels[box[1]:box[3] + 1, box[0]:box[2] + 1], base), rng)
        objects.append((shape, box))
    return np.asarray(image), objects


def _voc_xml(name: str, size: int, objects) -> str:
    rows = "".join(
        f"  <object><name>{shape}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin>"
        f"<ymin>{y0 + 1}</ymin><xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax></bndbox></object>\n"
        for shape, (x0, y0, x1, y1) in objects)
    return (f"<annotation>\n  <filename>{name}.jpg</filename>\n  <size><width>{size}</width>"
            f"<height>{size}</height><depth>3</depth></size>\n{rows}</annotation>\n")


def write_shapes_voc(root, splits: Dict[str, int], size: int = 128, seed: int = 0, max_objects: int = 2,
                     scale: Tuple[float, float] = (0.25, 0.6), colour_hint: bool = False, quality: int = 92,
                     shapes: Sequence[str] = SHAPES) -> Path:
    """Write a VOC folder at `root`: JPEGImages/, Annotations/, ImageSets/Main/<split>.txt
    for each split {name: image count}, and labelmap.prototxt (background + `shapes`, the
    classes drawn: SHAPES by default, any of SHAPES + EXTRA_SHAPES).

    Image ids run on across splits, so the splits never share an image; the
    same seed writes the same files. `colour_hint`: see shapes_image.
    """
    from PIL import Image

    root = Path(root)
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    index = 0
    for split, count in splits.items():
        names = []
        for _ in range(count):
            name = f"{index:06d}"
            index += 1
            pixels, objects = shapes_image(rng, size, max_objects, scale, shapes=shapes, colour_hint=colour_hint)
            Image.fromarray(pixels).save(root / "JPEGImages" / f"{name}.jpg", quality=quality)
            (root / "Annotations" / f"{name}.xml").write_text(_voc_xml(name, size, objects))
            names.append(name)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    (root / "labelmap.prototxt").write_text(labelmap_text(_Classes(shapes)))
    return root


class _Classes:
    """What labelmap_from_dataset reads of a dataset: its class names in label order."""

    def __init__(self, classes: Sequence[str]):
        self.classes = tuple(classes)


def labelmap_text(dataset) -> str:
    return text(labelmap_from_dataset(dataset))
