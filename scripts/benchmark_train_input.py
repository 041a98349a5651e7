"""Augmented training images per second of caffessd.train.data.build_input.

    python scripts/benchmark_train_input.py [--images 200] [--batches 15] [--workdir DIR]

Writes an LMDB of distinct 500x375 JPEGs with 1-4 boxes each, generates the
300x300 and 640x640 train nets with `caffessd gen-model` (the SSD fork's full
augmentation: distort, expand x4, 7 samplers, 5 interpolations, mirror) and
times batches of 24 from the TRAIN pipeline. Peers in the same process: the
same net in TEST phase with only a WARP resize (decode + resize + mean, no
augmentation), and the TRAIN pipeline with num_parallel_calls=1.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from benchmark_cpu import cpu_report  # noqa: E402


def make_lmdb(workdir: Path, count: int) -> Path:
    from train_data_helpers import noise_items, write_lmdb

    return write_lmdb(workdir / "bench_lmdb", noise_items(count, min_side=20), encode=".jpg")


def layer_for(workdir: Path, side: int, stage: str, source: Path, batch: int):
    from caffessd import protoio
    from caffessd.train.data import find_data_layer

    out = workdir / f"net{side}"
    if not (out / f"{stage}.prototxt").exists():
        subprocess.run([sys.executable, "-m", "caffessd", "gen-model", "-o", str(out), "--stage", stage,
                        "--input", str(side)], check=True, cwd=ROOT)
    layer = find_data_layer(protoio.read_prototxt(out / f"{stage}.prototxt"), stage.upper())
    layer.data_param.source = str(source)
    layer.data_param.batch_size = batch
    return layer


def images_per_second(layer, phase: str, batches: int, calls=None) -> float:
    from caffessd.train.data import build_input

    dataset = build_input(layer, phase, seed=0, repeat=True, num_parallel_calls=calls)
    iterator = iter(dataset)
    for _ in range(2):  # warm up: tracing, first decode, prefetch fill
        next(iterator)
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        images, _ = next(iterator)
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    print("CPU:", cpu_report())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_train_input_"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "bench_lmdb"
    if not source.exists():
        make_lmdb(workdir, args.images)
    import os
    print(f"{os.cpu_count()} CPUs, batch {args.batch_size}, {args.batches} batches timed, 500x375 JPEG sources")
    print("| input | TRAIN augmented img/s | TRAIN, 1 parallel call | TEST resize only img/s | augmented / resize only |")
    print("|---|---|---|---|---|")
    for side in (300, 640):
        train = layer_for(workdir, side, "train", source, args.batch_size)
        test = layer_for(workdir, side, "test", source, args.batch_size)
        augmented = images_per_second(train, "TRAIN", args.batches)
        serial = images_per_second(train, "TRAIN", args.batches, calls=1)
        plain = images_per_second(test, "TEST", args.batches)
        print(f"| {side}x{side} | {augmented:.1f} | {serial:.1f} | {plain:.1f} | {augmented / plain:.2f} |")


if __name__ == "__main__":
    main()
