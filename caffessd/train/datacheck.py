"""What `caffessd train` prints before the first iteration: lint-dataset's
summary of the train net's LMDB (caffessd.analysis.lint), so that boxes that
would make the loss NaN or never match are seen before hours of training."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from caffessd.analysis.lint import LintOptions, startup_lines
from caffessd.datasets.labelmap import label_names, name_to_label
from caffessd.datasets.lmdb_reader import LmdbDataset
from caffessd.protoio import read_labelmap


def _label_map(path: str, root: Optional[Path]):
    if not path:
        return None
    candidates = [Path(path)] + ([Path(root) / path] if root is not None else [])
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        return None
    return read_labelmap(found)


def train_data_lines(layer, root: Optional[Path] = None) -> List[str]:
    """The summary lines for an AnnotatedData layer's LMDB ([] when it has none to read)."""
    if layer.type != "AnnotatedData" or not layer.data_param.source:
        return []
    source = Path(layer.data_param.source)
    if not source.is_absolute() and root is not None:
        source = Path(root) / source
    if not (source / "data.mdb").is_file():
        return []
    labelmap = _label_map(layer.annotated_data_param.label_map_file, root)
    names = label_names(labelmap) if labelmap is not None else None
    labels = name_to_label(labelmap, layer.annotated_data_param.label_map_file) if labelmap is not None else None
    dataset = LmdbDataset(source, labelmap=names)
    try:
        return startup_lines(dataset, LintOptions(labels=labels, check_images=False))
    finally:
        dataset.close()
