#!/usr/bin/env python3
"""Latency of one Caffe SSD model on caffessd (onnxruntime) and on OpenCV 4.x DNN.

Both engines get the same preprocessed blob from the same photo, in the same
process, with the same thread count; each is warmed up, then timed over many
runs. Prints the median latency of each and the ratio OpenCV / caffessd
(above 1 means caffessd is faster).

    python scripts/benchmark_inference.py                     # embedded face detector
    python scripts/benchmark_inference.py --threads 2 --runs 200
    python scripts/benchmark_inference.py --model deploy.prototxt --weights w.caffemodel --image x.jpg

Needs OpenCV 4.x (`pip install 'opencv-python-headless<5'`, part of the test extra).
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caffessd.image.preprocess import load_image, make_blob  # noqa: E402
from caffessd.inference.detector import Detector, default_model, sample_image  # noqa: E402
from benchmark_cpu import cpu_report  # noqa: E402


def time_runs(run, warmup: int, runs: int) -> list:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="deploy prototxt (default: embedded face detector)")
    parser.add_argument("--weights", help="caffemodel")
    parser.add_argument("--image", help="photo to run on (default: bundled sample)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    print("CPU:", cpu_report())

    import cv2

    if not cv2.__version__.startswith("4."):
        print(f"OpenCV {cv2.__version__} has no Caffe importer; install opencv-python-headless<5", file=sys.stderr)
        return 2
    spec = default_model()
    prototxt = Path(args.model) if args.model else spec.prototxt
    weights = Path(args.weights) if args.weights else spec.caffemodel
    with tempfile.TemporaryDirectory() as cache:
        detector = Detector(prototxt, weights, preprocessing=None if args.model else spec.preprocessing,
                            cache=Path(cache), threads=args.threads)
        blob = make_blob(load_image(args.image or sample_image()), detector.preprocessing)

        cv2.setNumThreads(args.threads)
        cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
        cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

        def run_opencv():
            cv_net.setInput(blob)
            return cv_net.forward()

        ours = time_runs(lambda: detector.run_blob(blob), args.warmup, args.runs)
        theirs = time_runs(run_opencv, args.warmup, args.runs)
        # Interleave a second round so drift in machine load hits both engines.
        ours += time_runs(lambda: detector.run_blob(blob), 0, args.runs)
        theirs += time_runs(run_opencv, 0, args.runs)

    ours_ms, theirs_ms = statistics.median(ours), statistics.median(theirs)
    shape = "x".join(map(str, blob.shape))
    print(f"model: {prototxt.name}  input: {shape}  threads: {args.threads}  runs: {2 * args.runs} each")
    print(f"caffessd (onnxruntime)  median {ours_ms:8.2f} ms")
    print(f"OpenCV {cv2.__version__:<10}      median {theirs_ms:8.2f} ms")
    print(f"speed-up (OpenCV / caffessd): {theirs_ms / ours_ms:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
