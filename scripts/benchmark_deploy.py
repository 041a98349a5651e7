#!/usr/bin/env python3
"""Deployment speed, all figures from one process with the same thread count:

1. int8 vs fp32 latency (median over interleaved runs) of MobileNet-SSD 300,
   MobileNetV2-SSDLite 300 (both from gen-model with --init-weights) and the
   embedded face detector; int8 models come from caffessd.inference.quantize_model
   calibrated on generated photos.
2. Folder throughput (images/s) over generated JPEG photos: caffessd's
   pipelined detection (Detector.detect_many: decode-ahead threads, batch N
   with a fixed-batch export and with `export-onnx --batch dynamic`)
   against a plain OpenCV DNN loop (cv2.imread + blobFromImage + forward);
   also with `threads` streams (images side by side, 1 onnxruntime thread each),
   with CPU ms per image beside images/s; then decode and resize CPU cost per
   photo against cv2.imread and cv2.resize (part `preprocess`).
3. int8 vs fp32 agreement on generated face-photo crops (IoU and score of
   matched faces, and faces found by one model only).
4. mAP of the face detector, fp32 vs int8, with `caffessd eval` on those
   generated face photos (boxes known from where the faces were pasted).
5. Start-up: a Detector's first start (optimiser runs, graph saved to the
   cache) against its second (cached optimised graph loaded).
6. Memory (part `memory`): peak RSS of `caffessd detect FOLDER` in a fresh
   process on a tenth of the photos and on all of them; the pipeline holds a
   bounded number of images, so the peak must not grow with the folder.
7. Thread spinning (part `spinning`): onnxruntime's session for serial work
   (threads spin within a run, caffessd's default) against its session for
   pipelined work (threads never spin, what detect_many switches to beside its
   decoding threads), each held to its setting, on one image at a time
   (latency) and over the folder (detect_many, 2 decoding threads).

    python scripts/benchmark_deploy.py                       # everything, 2 threads
    python scripts/benchmark_deploy.py --runs 50 --photos 500 --threads 2

Needs OpenCV 4.x (the test extra). Slow on a busy machine: minutes.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caffessd.inference import quantize_model  # noqa: E402
from caffessd.inference.session import make_session  # noqa: E402
from caffessd.onnxconv import convert  # noqa: E402
from caffessd.image.preprocess import Preprocessing, load_image, make_blob  # noqa: E402
from caffessd.resources import bundled  # noqa: E402
from caffessd.inference.detector import Detector, default_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_inference import time_runs  # noqa: E402  (one timing loop for every benchmark)
from benchmark_cpu import cpu_report  # noqa: E402

MOBILENET_PREP = Preprocessing(width=300, height=300, mean=(127.5, 127.5, 127.5), scale=0.007843)
GEN_MODELS = {
    "MobileNet-SSD 300": ["--backbone", "mnv1", "--bn", "none"],
    "MobileNetV2-SSDLite 300": ["--backbone", "mnv2", "--head", "ssdlite", "--relu6", "--bn", "none"],
}


# Face crops of the bundled photos and the face box inside each crop (the
# fp32 detection on the full photo, moved into crop coordinates).
FACE_CROPS = [("keliamoniz1.jpg", (250, 90, 510, 420), (37, 40, 217, 294)),
              ("keliamoniz2.jpg", (180, 70, 340, 330), (27, 30, 136, 229))]


def generate_photos(folder: Path, count: int, seed: int = 0):
    """JPEG 'photos': textured backgrounds of varied sizes with 1-3 face crops
    pasted at random scales and places, not overlapping. Returns (paths,
    face boxes per photo in pixels)."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    crops = [(Image.open(bundled("yufacedetectnet", name)).convert("RGB").crop(region), face)
             for name, region, face in FACE_CROPS]
    folder.mkdir(parents=True, exist_ok=True)
    paths, boxes = [], []
    for index in range(count):
        width, height = int(rng.integers(480, 1024)), int(rng.integers(360, 768))
        noise = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(noise).resize((width, height), Image.BICUBIC).filter(ImageFilter.GaussianBlur(3))
        placed = []
        for _ in range(int(rng.integers(1, 4))):
            crop, face = crops[int(rng.integers(0, 2))]
            scale = float(rng.uniform(0.25, 0.7)) * height / crop.height
            pasted = crop.resize((max(16, int(crop.width * scale)), max(16, int(crop.height * scale))))
            for _ in range(20):  # find a free place
                x = int(rng.integers(0, max(1, width - pasted.width)))
                y = int(rng.integers(0, max(1, height - pasted.height)))
                spot = (x, y, x + pasted.width, y + pasted.height)
                if all(spot[2] <= o[0] or o[2] <= spot[0] or spot[3] <= o[1] or o[3] <= spot[1] for o in placed):
                    break
            else:
                continue
            image.paste(pasted, (x, y))
            placed.append(spot)
            sx, sy = pasted.width / crop.width, pasted.height / crop.height
            boxes.append((index, x + face[0] * sx, y + face[1] * sy, x + face[2] * sx, y + face[3] * sy))
        path = folder / f"photo{index:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    per_photo = [[b[1:] for b in boxes if b[0] == i] for i in range(count)]
    return paths, per_photo


def write_list_dataset(folder: Path, paths: list, boxes: list) -> Path:
    """A Caffe list file with txt annotations (label 1 = face) for `caffessd eval`."""
    lines = []
    for path, faces in zip(paths, boxes):
        note = folder / f"{path.stem}.txt"
        note.write_text("".join(f"1 {x0:.1f} {y0:.1f} {x1:.1f} {y1:.1f}\n" for x0, y0, x1, y1 in faces))
        lines.append(f"{path.relative_to(folder)} {note.relative_to(folder)}\n")
    (folder / "list.txt").write_text("".join(lines))
    (folder / "labelmap.prototxt").write_text('item { name: "background" label: 0 }\n'
                                              'item { name: "face" label: 1 }\n')
    return folder / "list.txt"


def eval_map(models: list, folder: Path, threads: int) -> str:
    """`caffessd eval` of `models` side by side on the list dataset in `folder` (VOC07 mAP)."""
    done = subprocess.run([sys.executable, "-m", "caffessd", "eval", *map(str, models), "--dataset",
                           str(folder / "list.txt"), "--format", "list", "--labelmap",
                           str(folder / "labelmap.prototxt"), "--metric", "voc07", "--threads", str(threads),
                           "--out", str(folder / "eval_report")],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        return f"caffessd eval failed: {done.stderr.strip().splitlines()[-1:]}"
    return done.stdout


def gen_model(name: str, args: list, folder: Path):
    out = folder / name.split()[0]
    subprocess.run([sys.executable, "-m", "caffessd", "gen-model", *args, "--stage", "deploy",
                    "--init-weights", str(out / "weights.caffemodel"), "-o", str(out)],
                   check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent)
    return out / "deploy.prototxt", out / "weights.caffemodel"


def export(prototxt, weights, prep: Preprocessing, target: Path, batch: int = 1) -> Path:
    input_shapes = None
    if batch > 1:
        input_shapes = (batch, 3, prep.height, prep.width)
    model = convert(prototxt, weights, metadata=prep.to_metadata(), input_shapes=input_shapes)
    target.write_bytes(model.SerializeToString())
    return target


def export_dynamic(one_image: Path, target: Path) -> Path:
    """`export-onnx --batch dynamic`: the one-image model in a Loop over the batch."""
    import onnx

    from caffessd.onnxconv.dynamic_batch import with_dynamic_batch

    target.write_bytes(with_dynamic_batch(onnx.load(str(one_image))).SerializeToString())
    return target


# Runs the CLI in a fresh interpreter and prints its peak RSS (VmHWM, via
# benchmark_train.peak_rss_mb: ru_maxrss would carry this process's peak into
# the child) on stderr when it exits.
PEAK_RSS_RUNNER = ("import atexit, sys\n"
                   f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
                   "from benchmark_train import peak_rss_mb\n"
                   "atexit.register(lambda: print('peak_rss_mb', peak_rss_mb(), file=sys.stderr))\n"
                   "from caffessd.cli import main\n"
                   "main(sys.argv[1:])\n")


def detect_peak_rss_mb(photos: list, work: Path, extra: list) -> float:
    """Peak RSS (MB) of `caffessd detect` over a folder holding `photos`."""
    folder = work / f"folder-{len(photos)}"
    folder.mkdir(exist_ok=True)
    for index, path in enumerate(photos):  # a photo may come more than once
        target = folder / f"{index:06d}-{path.name}"
        if not target.exists():
            target.symlink_to(path)
    out = work / f"detect-{len(photos)}-{'-'.join(extra) or 'default'}"
    done = subprocess.run([sys.executable, "-c", PEAK_RSS_RUNNER, "detect", str(folder), "--out", str(out),
                           "--cache-dir", str(work / "cache"), *extra],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    peak = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("peak_rss_mb")]
    return float(peak[-1])


def latency(fp32: Path, int8: Path, blob: np.ndarray, threads: int, runs: int):
    sessions = [make_session(str(p), threads) for p in (fp32, int8)]
    name = sessions[0].get_inputs()[0].name
    samples = [[], []]
    for session in sessions:
        time_runs(lambda: session.run(None, {name: blob}), 5, 0)
    for _ in range(max(1, 2 * runs // 10)):  # blocks of 10, alternating: load drift hits both alike
        for i, session in enumerate(sessions):
            samples[i] += time_runs(lambda: session.run(None, {name: blob}), 0, 10)
    return statistics.median(samples[0]), statistics.median(samples[1])


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def agreement(fp32: Path, int8: Path, photos: list, threads: int):
    """Matched faces (IoU >= 0.5): worst IoU, largest score change; faces one model alone finds."""
    ours, theirs = (Detector(onnx_path=p, threads=threads, threshold=0.5) for p in (int8, fp32))
    ious, score_diffs, only = [], [], 0
    for a, b in zip(ours.detect_many(photos), theirs.detect_many(photos)):
        left = list(a.detections)
        for det in b.detections:
            best = max(left, key=lambda d: iou(d.box, det.box), default=None)
            if best is None or iou(best.box, det.box) < 0.5:
                only += 1
                continue
            left.remove(best)
            ious.append(iou(best.box, det.box))
            score_diffs.append(abs(best.score - det.score))
        only += len(left)
    return ious, score_diffs, only


def throughput_caffessd(model: Path, photos: list, threads: int, batch: int, workers: int, streams: int = 1) -> float:
    detector = Detector(onnx_path=model, threads=threads)
    # Untimed first, as OpenCV's loop below: detect_many tunes the engine for
    # its workload (a new onnxruntime session), and first runs are slow.
    sum(1 for _ in detector.detect_many(photos[:batch * max(1, streams) * 2], batch=batch, workers=workers,
                                        streams=streams))
    return timed_images(lambda: sum(1 for _ in detector.detect_many(photos, batch=batch, workers=workers,
                                                                   streams=streams)))


def spinning(fp32: Path, photos: list, threads: int, runs: int, rounds: int) -> dict:
    """{workload: (latency ms, folder images/s)} of Detectors held to each
    workload (set_workload disabled after it), interleaved in blocks."""
    from caffessd.inference.engines.base import WORKLOADS

    detectors = {}
    for workload in WORKLOADS:
        detector = Detector(onnx_path=fp32, threads=threads, threshold=0.3)
        detector.engine.set_workload(workload)
        detector.engine.set_workload = lambda _: None  # held: detect_many would switch it
        detectors[workload] = detector
    blob = detectors[WORKLOADS[0]].prepare(load_image(photos[0]))
    latencies = {workload: [] for workload in detectors}
    rates = {workload: [] for workload in detectors}
    for detector in detectors.values():
        time_runs(lambda: detector.run_blob(blob), 5, 0)
    for _ in range(rounds):
        for workload, detector in detectors.items():
            for _ in range(max(1, runs // 10)):
                latencies[workload] += time_runs(lambda: detector.run_blob(blob), 0, 10)
            rates[workload].append(timed_images(lambda: sum(1 for _ in detector.detect_many(photos, workers=2)))[0])
    return {workload: (statistics.median(latencies[workload]), statistics.median(rates[workload]))
            for workload in detectors}


def timed_images(run) -> tuple:
    """(images/s, CPU ms per image) of run() -> image count. CPU time counts
    every thread of this process: unlike the rate, it barely moves when other
    jobs take cores away, so it is the figure to compare on a busy machine."""
    cpu, start = time.process_time(), time.perf_counter()
    count = run()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return count / wall, cpu * 1000.0 / count


def throughput_opencv(prototxt, weights, prep: Preprocessing, photos: list, threads: int) -> float:
    import cv2

    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))

    def loop(paths):
        for path in paths:
            blob = cv2.dnn.blobFromImage(cv2.imread(str(path)), prep.scale, (prep.width, prep.height), prep.mean)
            net.setInput(blob)
            net.forward()
        return len(paths)
    loop(photos[:2])  # untimed: OpenCV sets its layers up on the first forward
    return timed_images(lambda: loop(photos))


def preprocessing_costs(photos: list, prep: Preprocessing):
    """(stage, caffessd CPU ms, OpenCV CPU ms) per photo: decode (Pillow via
    caffessd.image.read vs cv2.imread; also Pillow's JPEG decode alone) and
    resize (the numpy copy of INTER_LINEAR vs cv2.resize), each over every
    photo, best of 3 passes."""
    import cv2

    from caffessd.image.preprocess import resize_linear

    cv2.setNumThreads(1)

    def cost(fn, items):
        passes = []
        for _ in range(3):
            start = time.process_time()
            for item in items:
                fn(item)
            passes.append((time.process_time() - start) * 1000.0 / len(items))
        return min(passes)

    def pillow_decode(path):  # the JPEG decode alone, no conversion to a BGR array
        from PIL import Image

        with Image.open(path) as image:
            image.load()

    images = [load_image(path) for path in photos]
    size = (prep.width, prep.height)
    imread = cost(lambda p: cv2.imread(str(p)), photos)
    return [("decode (JPEG to BGR array)", cost(load_image, photos), imread),
            ("  of which Pillow's decode", cost(pillow_decode, photos), imread),
            (f"resize to {size[0]}x{size[1]}", cost(lambda a: resize_linear(a, *size), images),
             cost(lambda a: cv2.resize(a, size, interpolation=cv2.INTER_LINEAR), images))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model and round (two rounds)")
    parser.add_argument("--photos", type=int, default=500, help="generated photos for the throughput test")
    parser.add_argument("--calibration", type=int, default=20, help="calibration images")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (median of each variant)")
    parser.add_argument("--batch", type=int, default=4, help="batch size of the batched throughput run")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: "
                        "latency,throughput,preprocess,agreement,map,startup,memory,spinning")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print("CPU:", cpu_report())
    import cv2

    with tempfile.TemporaryDirectory(prefix="caffessd-bench-") as work:
        work = Path(work)
        photos, faces = generate_photos(work / "photos", args.photos)
        calib = work / "calib"
        calib.mkdir()
        for path in photos[-args.calibration:]:  # calibrate on photos the agreement test does not use first
            (calib / path.name).write_bytes(path.read_bytes())
        face = default_model()
        models = {"YuFaceDetectNet 320x240": (face.prototxt, face.caffemodel, face.preprocessing)}
        for name, gen_args in GEN_MODELS.items():
            models[name] = (*gen_model(name, gen_args, work), MOBILENET_PREP)
        exported = {}
        for name, (prototxt, weights, prep) in models.items():
            stem = name.split()[0]
            fp32 = export(prototxt, weights, prep, work / f"{stem}.onnx")
            int8 = work / f"{stem}-int8.onnx"
            quantize_model(fp32, calib, int8, images=args.calibration)
            exported[name] = (fp32, int8)
        print(f"onnxruntime threads: {args.threads}; OpenCV {cv2.__version__}; {args.photos} generated photos")

        if "latency" not in skip:
            print(f"\nlatency, median of {max(10, 2 * args.runs // 10 * 10)} runs each (fp32 and int8 alternating "
                  "in blocks of 10):")
            for name, (fp32, int8) in exported.items():
                blob = make_blob(load_image(photos[0]), models[name][2])
                a, b = latency(fp32, int8, blob, args.threads, args.runs)
                print(f"  {name:<26} fp32 {a:7.2f} ms   int8 {b:7.2f} ms   int8 speed-up {a / b:.2f}x")

        if "throughput" not in skip:
            print(f"\nfolder throughput, {len(photos)} photos (decode + preprocess + inference), "
                  f"median of {args.rounds} rounds:")
            for name in ("YuFaceDetectNet 320x240", "MobileNet-SSD 300"):
                prototxt, weights, prep = models[name]
                fp32, int8 = exported[name]
                target = work / f"{name.split()[0]}-b{args.batch}.onnx"
                batched = export(prototxt, weights, prep, target, args.batch)
                dynamic = export_dynamic(fp32, work / f"{name.split()[0]}-dynamic.onnx")
                runs = {"OpenCV loop": lambda: throughput_opencv(prototxt, weights, prep, photos, args.threads),
                        "fp32, batch 1": lambda: throughput_caffessd(fp32, photos, args.threads, 1, 2),
                        f"fp32, batch {args.batch}": lambda: throughput_caffessd(batched, photos, args.threads,
                                                                                 args.batch, 2),
                        f"fp32, dynamic, {args.batch}": lambda: throughput_caffessd(dynamic, photos, args.threads,
                                                                                     args.batch, 2),
                        "int8, batch 1": lambda: throughput_caffessd(int8, photos, args.threads, 1, 2),
                        # `detect --streams N`: N images side by side, a 1-thread session each.
                        f"fp32, {args.threads} streams": lambda: throughput_caffessd(fp32, photos, 1, 1, 2,
                                                                                      args.threads),
                        f"int8, {args.threads} streams": lambda: throughput_caffessd(int8, photos, 1, 1, 2,
                                                                                      args.threads)}
                # Rounds alternate every variant, so a busy spell slows them all alike; medians reported.
                # Each run gives (images/s, CPU ms per image).
                rates = {label: [] for label in runs}
                for _ in range(args.rounds):
                    for label, run in runs.items():
                        rates[label].append(run())
                rates = {label: (statistics.median(r for r, _ in values), statistics.median(c for _, c in values))
                         for label, values in rates.items()}
                cv_rate, cv_cpu = rates.pop("OpenCV loop")
                print(f"  {name}: OpenCV loop {cv_rate:6.1f} img/s, CPU {cv_cpu:5.1f} ms/img")
                for label, (rate, cpu) in rates.items():
                    print(f"    caffessd detect_many {label:<16} {rate:6.1f} img/s   {rate / cv_rate:.2f}x OpenCV;  "
                          f"CPU {cpu:5.1f} ms/img, {cv_cpu / cpu:.2f}x less")

        if "preprocess" not in skip:
            print(f"\npreprocessing, CPU ms per photo over {len(photos)} photos, caffessd vs OpenCV (1 thread):")
            for label, ours, theirs in preprocessing_costs(photos, MOBILENET_PREP):
                print(f"  {label:<28} caffessd {ours:5.2f} ms   OpenCV {theirs:5.2f} ms   {ours / theirs:.1f}x OpenCV's")

        if "agreement" not in skip:
            fp32, int8 = exported["YuFaceDetectNet 320x240"]
            count = min(200, len(photos) - args.calibration)
            ious, diffs, only = agreement(fp32, int8, photos[:count], args.threads)
            print(f"\nface detector int8 vs fp32 on {count} generated face photos (not used for calibration):")
            print(f"  matched faces {len(ious)}, IoU min {min(ious):.3f} mean {statistics.mean(ious):.4f}; "
                  f"|score diff| max {max(diffs):.3f} mean {statistics.mean(diffs):.4f}; "
                  f"found by one model only: {only}")

        if "map" not in skip:
            fp32, int8 = exported["YuFaceDetectNet 320x240"]
            count = min(200, len(photos) - args.calibration)
            write_list_dataset(work / "photos", photos[:count], faces[:count])
            print(f"\ncaffessd eval, face detector fp32 vs int8, {count} generated face photos "
                  f"({sum(len(f) for f in faces[:count])} faces), VOC07 mAP at IoU 0.5:")
            print(eval_map([fp32, int8], work / "photos", args.threads))

        if "startup" not in skip:
            fp32 = exported["MobileNet-SSD 300"][0]
            cache = work / "cache"
            starts = []
            for _ in range(2):
                start = time.perf_counter()
                Detector(onnx_path=fp32, threads=args.threads, cache=cache)
                starts.append((time.perf_counter() - start) * 1000.0)
            print(f"\nDetector start, MobileNet-SSD: first {starts[0]:.0f} ms (optimises, saves to cache), "
                  f"second {starts[1]:.0f} ms (cached optimised graph)")

        if "spinning" not in skip:
            print(f"\nonnxruntime thread spinning, fp32, {args.threads} threads: latency (median of "
                  f"{args.rounds} x {max(10, args.runs // 10 * 10)} runs) and folder throughput "
                  f"({len(photos)} photos, 2 decoding threads, median of {args.rounds} rounds):")
            for name, (fp32, _) in exported.items():
                found = spinning(fp32, photos, args.threads, args.runs, args.rounds)
                (serial_ms, serial_rate), (piped_ms, piped_rate) = found["serial"], found["pipelined"]
                print(f"  {name:<26} spin within runs {serial_ms:6.2f} ms {serial_rate:6.1f} img/s;   "
                      f"never spin {piped_ms:6.2f} ms {piped_rate:6.1f} img/s;   latency {piped_ms / serial_ms:.2f}x "
                      f"shorter spinning, folder {piped_rate / serial_rate:.2f}x faster not spinning")

        if "memory" not in skip:
            folders = [photos[:max(1, len(photos) // 10)], photos, photos * 4]  # the last: each photo 4 times
            print("\npeak RSS of `caffessd detect FOLDER` (embedded face detector, fresh process each):")
            for extra in ([], ["--batch", "4", "--workers", "4"]):
                peaks = [detect_peak_rss_mb(group, work, extra) for group in folders]
                print(f"  {' '.join(extra) or 'defaults':<24} " + "   ".join(
                    f"{len(group):5d} photos {peak:5.0f} MB" for group, peak in zip(folders, peaks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
