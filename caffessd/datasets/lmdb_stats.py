"""What an AnnotatedDatum LMDB holds (inspect-lmdb): counts per class, image
sizes, boxes per image, and annotated pictures of entries as stored."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np

from caffessd.datasets.lmdb_reader import LmdbDataset, LmdbEntry
from caffessd.image.draw import PALETTE
from caffessd.util.files import atomic_write


@dataclass
class LmdbStats:
    entries: int = 0
    objects: Counter = field(default_factory=Counter)      # label name -> boxes
    difficult: Counter = field(default_factory=Counter)    # label name -> difficult boxes
    sizes: Counter = field(default_factory=Counter)        # (width, height) -> images
    boxes_per_image: Counter = field(default_factory=Counter)
    storage: Counter = field(default_factory=Counter)      # 'jpg'/'png'/'raw' etc. x channels

    def lines(self, top_sizes: int = 10) -> List[str]:
        text = [f"entries: {self.entries}", f"boxes: {sum(self.objects.values())} "
                f"({sum(self.difficult.values())} difficult)", "classes:"]
        for name, count in sorted(self.objects.items(), key=lambda kv: (-kv[1], kv[0])):
            text.append(f"  {name:<20} {count:>8} boxes, {self.difficult[name]} difficult")
        text.append("image sizes (WxH):")
        for (width, height), count in self.sizes.most_common(top_sizes):
            text.append(f"  {width}x{height:<10} {count:>8}")
        if len(self.sizes) > top_sizes:
            text.append(f"  ... {len(self.sizes) - top_sizes} more sizes")
        text.append("boxes per image:")
        for boxes, count in sorted(self.boxes_per_image.items()):
            text.append(f"  {boxes:>4} {count:>8}")
        text.append("stored as: " + ", ".join(f"{kind} ({count})" for kind, count in self.storage.most_common()))
        return text


def _storage_kind(entry: LmdbEntry) -> str:
    datum = entry.datum.datum
    if not datum.encoded:
        kind = "raw"
    elif datum.data[:3] == b"\xff\xd8\xff":
        kind = "jpg"
    elif datum.data[:8] == b"\x89PNG\r\n\x1a\n":
        kind = "png"
    else:
        kind = "encoded"
    return f"{kind} {datum.channels}ch"


def lmdb_statistics(dataset: LmdbDataset) -> LmdbStats:
    stats = LmdbStats()
    for entry in dataset.entries():
        record = entry.record
        stats.entries += 1
        stats.sizes[(record.width, record.height)] += 1
        stats.boxes_per_image[len(record.objects)] += 1
        stats.storage[_storage_kind(entry)] += 1
        for obj in record.objects:
            stats.objects[obj.label] += 1
            stats.difficult[obj.label] += obj.difficult
    return stats


def draw_entry(entry: LmdbEntry, path: Path, display: dict = None) -> Path:
    """The stored image with its stored boxes (difficult ones dashed-looking: thin) as PNG."""
    import io

    from PIL import Image, ImageDraw, ImageFont


    pixels = entry.image()
    rgb = pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels[:, :, ::-1])
    image = Image.fromarray(rgb).convert("RGB")
    scale = max(1, 300 // max(1, min(image.size)))  # enlarge tiny images so captions are readable
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, min(image.size) // 30))
    thickness = max(2, round(min(image.size) / 200))
    for obj in entry.record.objects:
        label_id = obj.attributes.get("label_id", 0)
        color = PALETTE[label_id % len(PALETTE)]
        x0, y0, x1, y1 = (v * scale for v in obj.box)
        draw.rectangle([x0, y0, x1, y1], outline=color, width=1 if obj.difficult else thickness)
        name = (display or {}).get(label_id, obj.label)
        caption = f"{name}{' (difficult)' if obj.difficult else ''}"
        left, top, right, bottom = draw.textbbox((x0, y0), caption, font=font)
        draw.rectangle([x0, y0, x0 + right - left + 4, y0 + bottom - top + 4], fill=color)
        draw.text((x0 + 2, y0 + 2), caption, fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write(path, buffer.getvalue())


def show_entries(dataset: LmdbDataset, count: int, folder: Path, display: dict = None) -> List[Path]:
    """Draw the first `count` entries into `folder` (KEY with '/' as '_' + .png)."""
    written = []
    for index, entry in enumerate(dataset.entries()):
        if index >= count:
            break
        written.append(draw_entry(entry, Path(folder) / (entry.key.replace("/", "_") + ".png"), display))
    return written
