"""Pictures of what the net will be trained on: augmented samples from an
AnnotatedData layer, with their ground-truth boxes, as PNG files."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from caffessd import caffe_pb2
from caffessd.image.draw import annotate


def blob_to_image(blob: np.ndarray, mean, scale: float) -> np.ndarray:
    """Undo (pixel - mean) * scale: float [3, H, W] -> uint8 BGR [H, W, 3]."""
    pixels = blob.transpose(1, 2, 0) / scale + np.asarray(mean, np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def write_samples(layer: caffe_pb2.LayerParameter, out_dir, count: int, *, phase: str = "TRAIN", seed: int = 0,
                  root: Optional[Path] = None, names: Optional[Dict[int, str]] = None) -> List[Path]:
    """Write `count` augmented images of `layer`'s pipeline with their boxes
    to out_dir/sample_NNNN.png; returns the paths. `names`: label -> name
    (e.g. from caffessd.protoio.labelmap_names)."""
    from caffessd.inference.detector import Detection
    from caffessd.train.data import build_input, parse_layer

    config = parse_layer(layer, phase)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    for images, gt in build_input(layer, phase, seed=seed, root=root):
        images, gt = images.numpy(), gt.numpy()
        for item, blob in enumerate(images):
            if len(written) >= count:
                return written
            image = blob_to_image(blob, config.transform.mean, config.transform.scale)
            h, w = image.shape[:2]
            boxes = []
            for row in gt[gt[:, 0] == item]:
                label = int(row[1])
                norm = tuple(float(v) for v in row[3:7])
                name = (names or {}).get(label, str(label)) + (" (difficult)" if row[7] > 0 else "")
                boxes.append(Detection(label=label, name=name, score=1.0,
                                       box=(norm[0] * w, norm[1] * h, norm[2] * w, norm[3] * h), box_normalized=norm))
            written.append(annotate(image, boxes, out_dir / f"sample_{len(written):04d}.png"))
    return written
