"""Which devices train, and the tf.distribute strategy over them.

- TF_CONFIG set (several machines, or several processes on one): a
  MultiWorkerMirroredStrategy; every worker reads the same global batch and
  trains on its slice, gradients are all-reduced, only the chief writes.
- `--gpus 0,1` / `all` with more than one GPU: a MirroredStrategy over them.
- Otherwise no strategy: one GPU when TensorFlow sees one, else the CPU.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from caffessd.errors import CaffessdError
from caffessd.train.tfimport import tensorflow


def check_gpus(gpus: Optional[str]) -> list:
    """The GPUs `--gpus` names ('0', '0,1', 'all'), checked against what TensorFlow
    sees and made the only visible ones (in the order given)."""
    tf = tensorflow()
    visible = tf.config.list_physical_devices("GPU")
    if gpus is None:
        return visible[:1]
    if gpus == "all":
        wanted = list(range(len(visible)))
    else:
        try:
            wanted = [int(g) for g in gpus.split(",") if g.strip()]
        except ValueError:
            raise CaffessdError(f"--gpus takes ids like 0 or 0,1 or all, got {gpus!r}") from None
    missing = [g for g in wanted if g >= len(visible) or g < 0]
    if missing:
        raise CaffessdError(f"--gpus {gpus}: TensorFlow sees {len(visible)} GPU(s), no GPU {missing[0]}")
    if len(set(wanted)) != len(wanted):
        raise CaffessdError(f"--gpus {gpus}: a GPU is named twice")
    chosen = [visible[g] for g in wanted]
    if chosen:
        tf.config.set_visible_devices(chosen, "GPU")
    return chosen


def training_strategy(gpus: Optional[str] = None, tf_config: Optional[str] = None):
    """The strategy `caffessd train` runs under (None: a single device).

    Must be called before TensorFlow runs any op (a strategy configures the runtime)."""
    tf = tensorflow()
    tf_config = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    if tf_config:
        try:
            json.loads(tf_config)["cluster"]   # only checked: TensorFlow reads TF_CONFIG itself
        except (ValueError, KeyError, TypeError):
            raise CaffessdError("TF_CONFIG is not JSON with a 'cluster' (see tf.distribute's TF_CONFIG)") from None
        check_gpus(gpus)
        return tf.distribute.MultiWorkerMirroredStrategy()
    chosen = check_gpus(gpus)
    if len(chosen) > 1:
        # set_visible_devices kept exactly the chosen GPUs: logical ids 0..n-1.
        return tf.distribute.MirroredStrategy([f"/gpu:{k}" for k in range(len(chosen))])
    return None


def is_chief(strategy) -> bool:
    """Whether this process writes logs, snapshots and curves: always without a
    multi-worker strategy; else the 'chief' task, or worker 0 when there is none."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def check_mixed_precision() -> None:
    """`--mixed-precision` is for GPUs (float16 tensor cores); on a CPU TensorFlow's
    float16 kernels are several times slower than float32 and gain nothing, so the
    command refuses it (Trainer(mixed_precision=True) still runs there, for tests)."""
    tf = tensorflow()
    if not tf.config.list_physical_devices("GPU"):
        raise CaffessdError("--mixed-precision needs a GPU (TensorFlow sees none); train in float32 on the CPU")
