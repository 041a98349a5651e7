"""Where a data layer's LMDB is: `data_param.source` resolved against the data
root, and the dataset rule applied to it (caffessd.util.dataset_paths).

Kept apart from caffessd.train.data (the tf.data pipeline) so that checking a
solver's sources needs no TensorFlow."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from caffessd.util.dataset_paths import inside_root


def resolve_source(source: str, root: Optional[Path]) -> Path:
    """A relative source below `root` (as given without one: the current folder, as Caffe reads it)."""
    path = Path(source)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    return path


def checked_source(layer, root: Optional[Path], net_file, allow_outside: bool = False) -> Path:
    """A data layer's LMDB, resolved as build_input resolves it, when it stays
    inside the data root (`root`, or the current folder without one): a
    relative source may not climb out of it ('..', a link leading out); an
    absolute one is taken as written unless a data root was given
    (caffessd.util.dataset_paths; `allow_outside` skips the check)."""
    source = layer.data_param.source
    path = resolve_source(source, root)
    if Path(source).is_absolute() and root is None:
        return path
    base = Path(root) if root is not None else Path.cwd()
    return inside_root(path, base, source=net_file, entry=source, allow_outside=allow_outside,
                       what=f"layer '{layer.name}' data_param.source")
