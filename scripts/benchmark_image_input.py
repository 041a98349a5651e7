#!/usr/bin/env python
"""Latency of `export-onnx --image-input` models: the default OpenCV fixed-point
resize against one ONNX Resize, both on the same image in one process, runs
interleaved, same thread count; prints the medians and their ratio.

    python scripts/benchmark_image_input.py [--model deploy.prototxt --weights w.caffemodel]
                                            [--image photo.jpg] [--runs 100] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caffessd.net import Net  # noqa: E402
from caffessd.netprep import net_preprocessing  # noqa: E402
from caffessd.onnxconv import to_onnx  # noqa: E402
from caffessd.onnxconv.image_input import add_image_input  # noqa: E402
from caffessd.image.preprocess import load_image  # noqa: E402
from caffessd.inference.detector import default_model, sample_image  # noqa: E402
from benchmark_cpu import cpu_report  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="deploy prototxt (default: the embedded face detector)")
    parser.add_argument("--weights", help="caffemodel")
    parser.add_argument("--image", help="image file (default: the bundled photo)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import onnxruntime as ort

    if args.model:
        prototxt, weights = Path(args.model), Path(args.weights)
        own = net_preprocessing(prototxt)
        mean, scale, rgb = own.mean, own.scale, own.rgb
    else:
        spec = default_model()
        prototxt, weights = spec.prototxt, spec.caffemodel
        mean, scale, rgb = spec.preprocessing.mean, spec.preprocessing.scale, spec.preprocessing.rgb
    model = to_onnx(Net.load(prototxt, weights))
    image = load_image(args.image or sample_image())
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {resize: ort.InferenceSession(add_image_input(model, mean, scale, net_rgb=rgb, resize=resize)
                                             .SerializeToString(), options, providers=["CPUExecutionProvider"])
                for resize in ("opencv", "onnx")}
    times = {resize: [] for resize in sessions}
    for run in range(args.runs + 5):
        for resize, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"image": image})
            if run >= 5:   # warm-up runs are not counted
                times[resize].append(time.perf_counter() - start)
    medians = {resize: 1000 * statistics.median(values) for resize, values in times.items()}
    print("CPU:", cpu_report())
    print(f"{Path(prototxt).name} on a {image.shape[1]}x{image.shape[0]} image, {args.threads} thread(s), "
          f"{args.runs} runs each")
    for resize, median in medians.items():
        print(f"  --image-resize {resize:<6}  {median:7.2f} ms")
    print(f"  opencv / onnx: {medians['opencv'] / medians['onnx']:.2f}x")


if __name__ == "__main__":
    main()
