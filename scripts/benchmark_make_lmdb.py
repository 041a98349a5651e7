"""Benchmark `caffessd make-lmdb`: images/s and peak RSS on generated 500x375
JPEGs (a Caffe list file with txt annotations), each run in its own process
so its peak RSS is its own (os.wait4). Memory must not grow with the
number of images: compare the --counts (default 2,000 vs 10,000). The peer
run in the same script is the same conversion with --workers 0 (decode and
encode inline on the writing thread), giving the parallel speed-up ratio.

    python scripts/benchmark_make_lmdb.py                 # 2000 and 10000 images
    python scripts/benchmark_make_lmdb.py --counts 500 2000 --workdir /tmp/b [--reuse]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from benchmark_cpu import cpu_report

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 500, 375


def make_image(folder: Path, index: int) -> str:
    """A distinct photo-like JPEG (smooth colour field plus texture) and a txt annotation."""
    rng = np.random.default_rng(index)
    coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BICUBIC)).astype(np.int16)
    field += rng.integers(-12, 13, size=field.shape, dtype=np.int16)
    name = f"img_{index:05d}"
    Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).save(folder / "images" / f"{name}.jpg", quality=90)
    boxes = []
    for _ in range(int(rng.integers(1, 6))):
        x0, y0 = rng.integers(0, WIDTH - 60), rng.integers(0, HEIGHT - 60)
        boxes.append(f"{rng.integers(1, 21)} {x0} {y0} {x0 + rng.integers(20, 60)} {y0 + rng.integers(20, 60)}\n")
    (folder / "labels" / f"{name}.txt").write_text("".join(boxes))
    return f"images/{name}.jpg labels/{name}.txt\n"


def make_dataset(folder: Path, count: int) -> list:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    labelmap = "".join(f'item {{ name: "{i}" label: {i} }}\n' for i in range(21))
    (folder / "labelmap.prototxt").write_text(labelmap)
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return list(pool.map(lambda i: make_image(folder, i), range(count)))


def run(folder: Path, lines: list, tag: str, extra: list) -> dict:
    listing = folder / f"list_{tag}.txt"
    listing.write_text("".join(lines))
    out = folder / f"out_{tag}_lmdb"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "caffessd", "make-lmdb", str(listing), "-f", "list", "-o", str(out),
               "--labelmap", str(folder / "labelmap.prototxt"), *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    output = process.stdout.read()
    if status != 0:
        raise SystemExit(f"{tag} failed: {output}")
    size = sum(p.stat().st_size for p in out.iterdir())
    shutil.rmtree(out)
    return {"tag": tag, "images": len(lines), "seconds": seconds, "rate": len(lines) / seconds,
            "peak_rss_mib": usage.ru_maxrss / 1024, "lmdb_mib": size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--workdir", type=Path, help="keep the generated images here (default: a temp folder)")
    parser.add_argument("--workers", type=int, default=None, help="make-lmdb --workers (default: its own)")
    parser.add_argument("--reuse", action="store_true", help="reuse the images already in --workdir")
    args = parser.parse_args()
    print("CPU:", cpu_report())
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="bench_make_lmdb_"))
    try:
        start = time.perf_counter()
        count = max(args.counts)
        if args.reuse and len(list((folder / "images").glob("*.jpg"))) >= count:
            lines = [f"images/img_{i:05d}.jpg labels/img_{i:05d}.txt\n" for i in range(count)]
        else:
            lines = make_dataset(folder, count)
        print(f"{'reused' if args.reuse else 'generated'} {len(lines)} {WIDTH}x{HEIGHT} JPEGs in {time.perf_counter() - start:.1f} s "
              f"({sum(p.stat().st_size for p in (folder / 'images').iterdir()) / 2**20:.0f} MiB)", flush=True)
        workers = [] if args.workers is None else ["--workers", str(args.workers)]
        smallest = min(args.counts)
        results = [run(folder, lines[:smallest], f"serial_{smallest}", ["--workers", "0"])]
        results += [run(folder, lines[:count], f"keep_{count}", workers) for count in args.counts]
        results.append(run(folder, lines[:smallest], f"resize300_{smallest}", workers + ["--resize", "300x300"]))
        results.append(run(folder, lines[:smallest], f"resize300_serial_{smallest}",
                           ["--workers", "0", "--resize", "300x300"]))
        print(f"{'run':<24} {'images':>7} {'seconds':>8} {'img/s':>8} {'peak RSS MiB':>13} {'LMDB MiB':>9}")
        for r in results:
            print(f"{r['tag']:<24} {r['images']:>7} {r['seconds']:>8.1f} {r['rate']:>8.1f} "
                  f"{r['peak_rss_mib']:>13.1f} {r['lmdb_mib']:>9.1f}")
        by_tag = {r["tag"]: r for r in results}
        keep = [by_tag[f"keep_{c}"] for c in args.counts]
        print(f"parallel / serial (keep original bytes, {smallest} images): "
              f"{by_tag[f'keep_{smallest}']['rate'] / by_tag[f'serial_{smallest}']['rate']:.2f}x")
        print(f"parallel / serial (--resize 300x300, {smallest} images): "
              f"{by_tag[f'resize300_{smallest}']['rate'] / by_tag[f'resize300_serial_{smallest}']['rate']:.2f}x")
        print(f"peak RSS {keep[-1]['images']} / {keep[0]['images']} images: "
              f"{keep[-1]['peak_rss_mib'] / keep[0]['peak_rss_mib']:.2f}x")
    finally:
        if args.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
