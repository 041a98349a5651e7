#!/usr/bin/env python3
"""Throughput and peak memory of `caffessd eval` against bare detection.

For each model and each dataset size, a fresh child process
1. runs the streaming evaluation (caffessd.eval.runner.evaluate, VOC 11point)
   over N generated images and records its peak RSS right after, then
2. in the same process, runs bare detection over the same N images the way
   `caffessd detect` does (decode, preprocess, infer, one image at a time),
and prints images/s of both, their ratio (eval / bare: 1.0 means the
evaluation costs nothing on top of detection), the median ratio over short
alternating rounds of both (fairer on a loaded machine), and the peak RSS. Peak RSS
that does not grow from the small to the large N shows memory is bounded.

Models: the embedded face detector (320x240), and a 640x640 MobileNetV2-SSD
generated with gen-model (random weights, 21 classes, conf threshold 0.01).

    python scripts/benchmark_eval.py                            # 1,000 and 3,000 images
    python scripts/benchmark_eval.py --sizes 200 600 --models mnv2-640
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmark_cpu import cpu_report  # noqa: E402

CLASSES = ["face"]


def write_dataset(root: Path, count: int, classes) -> None:
    """A VOC2007 folder of `count` smooth random 640x480 JPEGs, 1-4 boxes each."""
    import numpy as np
    from PIL import Image

    folder = root / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for k in range(count):
        image_id = f"{k:06d}"
        rng = np.random.default_rng(zlib.crc32(image_id.encode()))
        coarse = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((640, 480), Image.BILINEAR).save(folder / "JPEGImages" / f"{image_id}.jpg",
                                                                         quality=85)
        objects = []
        for _ in range(rng.integers(1, 5)):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(20, 140, 2)
            name = classes[rng.integers(0, len(classes))]
            objects.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x:.0f}</xmin>"
                           f"<ymin>{y:.0f}</ymin><xmax>{min(x + w, 639):.0f}</xmax><ymax>{min(y + h, 479):.0f}"
                           f"</ymax></bndbox></object>")
        (folder / "Annotations" / f"{image_id}.xml").write_text(
            "<annotation><size><width>640</width><height>480</height><depth>3</depth></size>"
            + "".join(objects) + "</annotation>\n")
        ids.append(image_id)
    (folder / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")


def make_mnv2(folder: Path):
    """gen-model's MobileNetV2-SSD at 640x640 with filler-initialised weights."""
    from caffessd.cli import main as cli_main

    try:
        cli_main(["gen-model", "--backbone", "mnv2", "--head", "ssd", "--input", "640", "--stage", "deploy",
                  "--conf-threshold", "0.01", "--init-weights", str(folder / "mnv2.caffemodel"), "-o", str(folder)])
    except SystemExit as exit:
        if exit.code:
            raise
    return next(folder.glob("*deploy*.prototxt")), folder / "mnv2.caffemodel"


def child(args) -> None:
    """One measurement in a fresh process; prints one JSON line."""
    import resource

    from caffessd.eval.runner import evaluate
    from caffessd.image.preprocess import load_image
    from caffessd.inference.detector import Detector

    model = None if args.model == "face" else tuple(args.model.split(","))
    detector = Detector(threshold=0.01) if model is None else Detector(*model, threshold=0.01)
    detector(load_image(next(Path(args.dataset).glob("VOC2007/JPEGImages/*.jpg"))))   # warm up
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = evaluate(detector, args.dataset, "voc07", format="voc", split="test", limit=args.count,
                      progress=False, labelmap=args.labelmap)
    rss_eval = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    paths = sorted(Path(args.dataset).glob("VOC2007/JPEGImages/*.jpg"))[: args.count]

    def bare_detect(some):
        start = time.perf_counter()
        for path in some:                    # what `caffessd detect` does per image, minus drawing
            detector(load_image(path))
        return len(some) / (time.perf_counter() - start)

    bare = bare_detect(paths)
    # On a shared machine one long pass of each drifts with the load; short
    # alternating rounds of eval and bare detect give the fairer ratio.
    rounds = []
    for _ in range(args.rounds):
        quick = evaluate(detector, args.dataset, "voc07", format="voc", split="test", limit=args.round_images,
                         progress=False, labelmap=args.labelmap).images_per_second
        rounds.append((quick, bare_detect(paths[: args.round_images])))
    print(json.dumps({"images": result.images, "eval_ips": result.images_per_second, "bare_ips": bare,
                      "rss_before_mib": rss_before / 1024, "rss_peak_mib": rss_eval / 1024,
                      "mAP": result.summary["mAP"],
                      "alternating_ratio": sorted(e / b for e, b in rounds)[len(rounds) // 2] if rounds else None}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--models", nargs="+", default=["face", "mnv2-640"], choices=["face", "mnv2-640"])
    parser.add_argument("--rounds", type=int, default=3, help="alternating eval/bare rounds for the ratio")
    parser.add_argument("--round-images", type=int, default=50, help="images per alternating round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--labelmap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    print("CPU:", cpu_report())
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="caffessd-bench-eval-") as tmp:
        tmp = Path(tmp)
        print(f"writing {max(args.sizes)} images ...", file=sys.stderr)
        write_dataset(tmp / "faces", max(args.sizes), ["face"])
        rows = []
        for name in args.models:
            extra = []
            if name == "face":
                model, dataset = "face", tmp / "faces"
            else:
                prototxt, weights = make_mnv2(tmp / "mnv2")
                model, dataset = f"{prototxt},{weights}", tmp / "faces"
                labelmap = tmp / "labelmap.prototxt"   # 21 classes; the dataset's 'face' is class 1
                labelmap.write_text("".join(f'item {{ name: "{n}" label: {i} }}\n' for i, n in
                                            enumerate(["background", "face"] + [f"c{i}" for i in range(2, 21)])))
                extra = ["--labelmap", str(labelmap)]
            for count in args.sizes:
                out = subprocess.run([sys.executable, __file__, "--child", "--model", model, "--dataset", str(dataset),
                                      "--count", str(count), "--rounds", str(args.rounds),
                                      "--round-images", str(args.round_images), *extra], capture_output=True, text=True, check=False)
                if out.returncode:
                    print(out.stderr[-3000:], file=sys.stderr)
                    return 1
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["model"] = name
                rows.append(row)
                print(f"{name:<9} {row['images']:>5} images: eval {row['eval_ips']:6.1f} img/s, bare detect "
                      f"{row['bare_ips']:6.1f} img/s, ratio {row['eval_ips'] / row['bare_ips']:.2f} "
                      f"(alternating rounds: {row['alternating_ratio']:.2f}), "
                      f"peak RSS {row['rss_peak_mib']:.0f} MiB (after model load {row['rss_before_mib']:.0f} MiB)",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
