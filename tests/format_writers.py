"""Write a dataset's records in the annotation formats caffessd reads: YOLO txt
(Ultralytics data.yaml or darknet classes.txt), Open Images CSV, CVAT for
images 1.1 XML and LabelMe JSON, each from its published description, not
from caffessd's readers. The round-trip tests write a VOC set in each and
read it back. Images are hard-linked (same bytes) into each layout."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import quoteattr


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_yolo(records, classes: Sequence[str], out: Path, split: str = "train", style: str = "yaml") -> Path:
    """style 'yaml': images/<split>/, labels/<split>/, data.yaml; 'darknet': images and
    txt side by side in out/, classes.txt. Returns the dataset folder."""
    index = {name: i for i, name in enumerate(classes)}
    for record in records:
        if style == "yaml":
            image = out / "images" / split / record.path.name
            label = out / "labels" / split / (record.path.stem + ".txt")
        else:
            image = out / record.path.name
            label = out / (record.path.stem + ".txt")
        _link(record.path, image)
        lines = []
        for obj in record.objects:
            x0, y0, x1, y1 = obj.box
            w, h = record.width, record.height
            lines.append(f"{index[obj.label]} {repr((x0 + x1) / 2 / w)} {repr((y0 + y1) / 2 / h)} "
                         f"{repr((x1 - x0) / w)} {repr((y1 - y0) / h)}")
        if lines:  # YOLO: an image without objects has no label file
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(lines) + "\n")
    if style == "yaml":
        names = "".join(f"  {i}: {name}\n" for i, name in enumerate(classes))
        (out / "data.yaml").write_text(f"path: .\n{split}: images/{split}\nnames:\n{names}")
    else:
        (out / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    return out


def write_openimages(records, classes: Sequence[str], out: Path, split: str = "validation") -> Path:
    mids = {name: f"/m/0{i:04d}" for i, name in enumerate(classes)}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "class-descriptions-boxable.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([(mids[n], n) for n in classes])
    header = ["ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax", "IsOccluded",
              "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside"]
    with open(out / f"{split}-annotations-bbox.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        for record in records:
            image_id = record.path.stem
            _link(record.path, out / split / f"{image_id}.jpg")
            for obj in record.objects:
                x0, y0, x1, y1 = obj.box
                writer.writerow([image_id, "xclick", mids[obj.label], 1, repr(x0 / record.width),
                                 repr(x1 / record.width), repr(y0 / record.height), repr(y1 / record.height),
                                 0, 0, int(obj.ignore), 0, 0])
    return out


def write_cvat(records, classes: Sequence[str], out: Path) -> Path:
    rows = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>",
            "  <meta><task><name>t</name><labels>"]
    rows += [f"    <label><name>{name}</name><attributes></attributes></label>" for name in classes]
    rows.append("  </labels></task></meta>")
    for i, record in enumerate(records):
        _link(record.path, out / "images" / record.path.name)
        rows.append(f'  <image id="{i}" name={quoteattr(record.path.name)} width="{record.width}" '
                    f'height="{record.height}">')
        for obj in record.objects:
            x0, y0, x1, y1 = obj.box
            rows.append(f'    <box label={quoteattr(obj.label)} occluded="0" source="manual" xtl="{x0!r}" '
                        f'ytl="{y0!r}" xbr="{x1!r}" ybr="{y1!r}" z_order="0">'
                        f'<attribute name="difficult">{str(obj.difficult).lower()}</attribute></box>')
        rows.append("  </image>")
    rows.append("</annotations>")
    (out / "annotations.xml").write_text("\n".join(rows) + "\n")
    return out


def write_labelme(records, out: Path) -> Path:
    for record in records:
        _link(record.path, out / "images" / record.path.name)
        shapes = [{"label": obj.label, "points": [[obj.box[0], obj.box[1]], [obj.box[2], obj.box[3]]],
                   "group_id": None, "shape_type": "rectangle", "flags": {"difficult": obj.difficult}}
                  for obj in record.objects]
        data = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"../images/{record.path.name}",
                "imageData": None, "imageHeight": record.height, "imageWidth": record.width}
        target = out / "annotations" / (record.path.stem + ".json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2))
    return out
