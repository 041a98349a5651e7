#!/usr/bin/env python3
"""Every engine caffessd has, against onnxruntime and OpenCV 4.x DNN, in one process.

For MobileNet-SSD 300 and MobileNetV2-SSDLite 300 (gen-model nets with
--init-weights, as benchmark_deploy.py makes them) and the embedded face
detector, each variant an engine can run is made with caffessd's own
exporters, then timed with the same thread count:

- onnxruntime: the ONNX export (fp32) and `caffessd quantize` (int8);
- OpenVINO: `export-openvino` (f32, bf16 at run time where the CPU computes
  bf16 natively, and --int8 by NNCF), and the ONNX file itself on OpenVINO;
- any other engine of the registry (caffessd.inference.engines: ncnn,
  TFLite) whose runtime is installed and whose `caffessd export-<name>`
  command exists: fp32, plus --fp16 / --int8 where the command has them;
- OpenCV 4.x DNN on the Caffe files (cv2.dnn.readNetFromCaffe).

Latency: the median of interleaved blocks of 10 runs on one prepared input
(inference only; every variant alternates with the others so load drift hits
all alike), each block after 3 untimed runs, so that no variant is timed
while the one before it still holds the cores and caches (BLOCK_WARMUP).
Throughput: caffessd's Detector.detect_many over a folder of generated
photos (decode, preprocess, inference, 2 decode threads) against an
OpenCV loop (imread, blobFromImage, forward), images/s and CPU ms per image;
and the same with `detect --streams THREADS` (that many images at once, a
1-thread Detector each), often the faster way over a folder on a small CPU.
The CPU's instruction sets are printed first: which engine wins depends on
them (bf16 needs AVX-512 BF16 or AMX, int8 gains most with VNNI or AMX).
Beside them, what the CPU's arithmetic allows: the multiply-add rate of one
large matrix product (2048 x 2048 x 2048) in onnxruntime on the same threads,
float32 MatMul and uint8 x int8 MatMulInteger. A net's 1x1 convolutions are
such products (smaller ones), so each variant's own rate (the net's
multiply-adds, as `caffessd inspect` counts them, over its latency) is
printed beside it: how far from that ceiling the engine is.
With --max-isa avx2, OpenVINO and OpenCV run as on a CPU without AVX-512,
VNNI, BF16 or AMX (benchmark_cpu.ISA_CAPS): the AVX2 figures from a machine
that has more. onnxruntime, ncnn and TFLite ignore the cap; their rows are
marked and left out of "fastest".
With --map, `caffessd eval` of the face detector's variants on generated face
photos with known boxes (VOC07 mAP): what bf16 and int8 cost in accuracy.

    nice python scripts/benchmark_engines.py                          # 2 threads
    nice python scripts/benchmark_engines.py --runs 30 --photos 100 --map
    nice python scripts/benchmark_engines.py --max-isa avx2           # an AVX2-only CPU, emulated

Needs OpenCV 4.x (test extra) and, for the OpenVINO rows, caffessd[openvino].
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_deploy import (GEN_MODELS, MOBILENET_PREP, eval_map, gen_model, generate_photos,  # noqa: E402
                              throughput_opencv, timed_images, write_list_dataset)
from benchmark_cpu import CAPPED_ENGINES, ISA_CAPS, cap_isa, capped_isa, cpu_report  # noqa: E402
from benchmark_inference import time_runs  # noqa: E402

from caffessd.inference.engines import known_engines  # noqa: E402
from caffessd.image.preprocess import load_image, make_blob  # noqa: E402
from caffessd.inference.detector import Detector, default_model  # noqa: E402
from caffessd.summary import summarize  # noqa: E402


def gemm_ceilings(threads: int, size: int = 2048, runs: int = 20) -> dict:
    """G multiply-adds/s of a size^3 matrix product in onnxruntime on `threads`
    threads, for "fp32" (MatMul) and "int8" (MatMulInteger, uint8 x int8): the
    best rate over `runs` runs."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    cases = {
        "fp32": ("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, rng.normal(0, 1, (size, size)).astype(np.float32),
                 rng.normal(0, 1, (size, size)).astype(np.float32)),
        "int8": ("MatMulInteger", TensorProto.UINT8, TensorProto.INT32,
                 rng.integers(0, 255, (size, size), dtype=np.uint8),
                 rng.integers(-127, 127, (size, size), dtype=np.int8)),
    }
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    rates = {}
    for label, (op, in_type, out_type, a, b) in cases.items():
        graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], "gemm",
                                  [helper.make_tensor_value_info("a", in_type, [size, size])],
                                  [helper.make_tensor_value_info("c", out_type, [size, size])],
                                  [numpy_helper.from_array(b, "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {"a": a})
        best = min(time_runs(lambda: session.run(None, {"a": a}), 0, runs))
        rates[label] = size ** 3 / (best / 1000) / 1e9
    return rates


def openvino_conv_ceilings(threads: int, size: int = 2048, runs: int = 5) -> dict:
    """G multiply-adds/s of OpenVINO's own 1x1 convolution kernel on the ideal
    shape (size channels in and out over size pixels, size^3 multiply-adds),
    "f32" and "int8" (FakeQuantize on input and weights, which OpenVINO runs
    as an int8 convolution): the best of `runs` of the Convolution node's own
    time (PERF_COUNT), reorders and the input's quantization left out. Unlike
    onnxruntime's it obeys --max-isa (OpenVINO runs its f32 MatMul on MLAS,
    which does not, hence a convolution)."""
    from caffessd.inference.engines.openvino_engine import openvino

    ov = openvino()
    import openvino.opset13 as ops

    def const(value):
        return ops.constant(np.asarray(value, dtype=np.float32))

    def quantized(node, low, high, levels):
        return ops.fake_quantize(node, const(low), const(high), const(low), const(high), levels)

    rng = np.random.default_rng(0)
    shape = [1, size, 32, size // 32]
    rates = {}
    for label in ("f32", "int8"):
        parameter = ops.parameter(shape, ov.Type.f32, name="data")
        data, weights = parameter, const(rng.normal(0, 1, (size, size, 1, 1)))
        if label == "int8":
            data, weights = quantized(data, 0.0, 4.0, 256), quantized(weights, -4.0, 4.0, 255)
        conv = ops.convolution(data, weights, [1, 1], [0, 0], [0, 0], [1, 1])
        compiled = ov.Core().compile_model(ov.Model([conv], [parameter]), "CPU",
                                           {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
                                            "PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        x = rng.uniform(0, 4, shape).astype(np.float32)
        best = None
        for _ in range(runs + 1):
            request.infer({0: x})
            seconds = sum(p.real_time.total_seconds() for p in request.get_profiling_info()
                          if p.node_type == "Convolution")
            best = seconds if best is None else min(best, seconds)
        rates[label] = size ** 3 / best / 1e9
    return rates


def print_ceilings(threads: int, when: str) -> None:
    """The matrix-product rates, measured at the start and again at the end of
    the run: a shared machine's speed drifts over minutes."""
    ceilings = gemm_ceilings(threads)
    print(f"arithmetic ceiling {when}, one 2048^3 matrix product in onnxruntime on {threads} threads: "
          f"float32 {ceilings['fp32']:.0f} GMAC/s, uint8 x int8 {ceilings['int8']:.0f} GMAC/s", flush=True)
    try:
        conv = openvino_conv_ceilings(threads)
    except Exception as exc:  # no OpenVINO: its rows are missing too
        print(f"  (OpenVINO's convolution ceiling not measured: {str(exc).splitlines()[0][:120]})")
        return
    print(f"  and OpenVINO's 1x1 convolution kernel on the same product (its node's own time"
          f"{', under the cap' if capped_isa() else ''}): "
          f"f32 {conv['f32']:.0f} GMAC/s, int8 {conv['int8']:.0f} GMAC/s", flush=True)


def cli(*args) -> str:
    """Run a caffessd command in this process; its stdout, or an exception with its error line."""
    from caffessd.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            if exc.code:
                raise RuntimeError(err.getvalue().strip().splitlines()[-1:] or f"exit {exc.code}") from None
    return out.getvalue()


def command_options(name: str) -> set:
    """The option names of `caffessd NAME` (empty when this caffessd has no such command)."""
    import importlib

    from caffessd.cli import COMMANDS

    module = dict(COMMANDS).get(name)
    if module is None:
        return set()
    return {opt for param in importlib.import_module(module).command.params for opt in param.opts}


def prep_args(prep) -> list:
    return ["--mean", ",".join(f"{v:g}" for v in prep.mean), "--scale", f"{prep.scale:g}",
            "--swap-rb" if prep.rgb else "--bgr"]


def make_variants(prototxt, weights, prep, folder: Path, calibration: Path, images: int) -> list:
    """(label, artifact, engine name, precision) for every variant this machine can run."""
    from caffessd.inference import quantize_model

    folder.mkdir(parents=True, exist_ok=True)
    onnx = folder / "model.onnx"
    cli("export-onnx", prototxt, weights, "-o", onnx, *prep_args(prep))
    int8 = folder / "model-int8.onnx"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantize_model(onnx, calibration, int8, images=images)
    variants = [("onnxruntime fp32", onnx, "onnxruntime", None), ("onnxruntime int8", int8, "onnxruntime", None)]
    for engine in known_engines():
        if engine.name == "onnxruntime":
            continue
        if not engine.available():
            print(f"  ({engine.name}: runtime not installed, pip install 'caffessd[{engine.extra}]')")
            continue
        variants += engine_variants(engine, prototxt, weights, prep, folder, calibration, images, onnx)
    return variants


def engine_variants(engine, prototxt, weights, prep, folder, calibration, images, onnx) -> list:
    """The variants of one registry engine, made by `caffessd export-<name>`."""
    options = command_options(f"export-{engine.name}")
    if not options:
        print(f"  ({engine.name}: this caffessd has no export-{engine.name} command)")
        return []
    found = []
    wanted = [("fp32", [])]
    if "--fp16" in options:
        wanted.append(("fp16", ["--fp16"]))
    if "--int8" in options:
        count = next(([flag, images] for flag in ("--images", "--calibration-images") if flag in options), [])
        wanted.append(("int8", ["--int8", "--calibrate", calibration, *count]))
    for label, extra in wanted:
        target = artifact_target(engine, folder / f"{engine.name}-{label}")
        try:
            cli(f"export-{engine.name}", prototxt, weights, "-o", target, *prep_args(prep), *extra)
        except RuntimeError as exc:
            print(f"  ({engine.name} {label}: export failed: {exc})")
            continue
        artifact = find_artifact(engine, target)
        found.append((f"{engine.name} {label}", artifact, engine.name, None))
        if engine.name == "openvino" and label == "fp32":
            from caffessd.inference.engines.openvino_engine import cpu_has_bf16

            found[-1] = ("openvino f32", artifact, "openvino", "f32")
            if cpu_has_bf16() and not capped_isa():  # an AVX2 CPU has no bf16
                found.append(("openvino bf16", artifact, "openvino", "bf16"))
            found.append(("openvino on the .onnx", onnx, "openvino", "f32"))
    return found


def artifact_target(engine, stem: Path) -> Path:
    """What to give -o: NAME.<suffix> for single-file formats, a folder for ncnn (NAME.param + NAME.bin)."""
    if engine.name == "ncnn":
        return stem
    return stem.with_suffix(engine.suffixes[0])


def find_artifact(engine, target: Path) -> Path:
    if target.is_dir():
        found = sorted(p for s in engine.suffixes for p in target.glob(f"*{s}"))
        if not found:
            raise RuntimeError(f"no {'/'.join(engine.suffixes)} file in {target}")
        return found[0]
    return target


# Untimed runs at the start of each block of 10. The variant timed before
# may leave its threads spinning for a while (OpenMP's, in ncnn, wait that
# way) and leaves the caches full of its own weights: measured on the int8
# face detector on OpenVINO, the first run after another engine's block took
# 1.1-1.8 ms against 0.65 ms in steady state, the second 0.8-1.2 ms, the
# third 0.7-1.0 ms. Three runs are enough for each engine, whatever it
# follows, to time its own steady state (a deployed detector does not
# alternate with eleven others), while the interleaving still spreads drift.
BLOCK_WARMUP = 3


def latencies(detectors: dict, cv_net, blob_cv, inputs: dict, runs: int) -> tuple:
    """(label -> median ms, label -> CPU ms per run), interleaved in blocks of 10
    timed runs, each after BLOCK_WARMUP untimed ones. CPU time counts every
    thread of the process: on a busy machine it moves far less than wall
    time, so it is the figure to compare there."""
    samples = {label: [] for label in list(detectors) + ["OpenCV 4.x DNN"]}
    cpu = {label: [] for label in samples}
    calls = {label: (lambda d=d, x=inputs[label]: d.run_blob(x)) for label, d in detectors.items()}

    def opencv():
        cv_net.setInput(blob_cv)
        cv_net.forward()
    calls["OpenCV 4.x DNN"] = opencv
    for call in calls.values():
        time_runs(call, 3, 0)
    for _ in range(max(1, runs // 10)):
        for label, call in calls.items():
            time_runs(call, BLOCK_WARMUP, 0)
            start = time.process_time()
            samples[label] += time_runs(call, 0, 10)
            cpu[label].append((time.process_time() - start) * 100.0)  # ms per run over a block of 10
    return ({label: statistics.median(values) for label, values in samples.items()},
            {label: statistics.median(values) for label, values in cpu.items()})


def benchmark_model(name, prototxt, weights, prep, work: Path, photos, calibration, args) -> dict:
    import cv2

    print(f"\n{name}: making the variants")
    variants = make_variants(prototxt, weights, prep, work / name.split()[0], calibration, args.calibration)
    detectors = {}
    for label, artifact, engine, precision in variants:
        try:
            detectors[label] = Detector(artifact=artifact, engine=engine, precision=precision, threads=args.threads,
                                        cache=work / "cache", threshold=0.3)
        except Exception as exc:  # a variant that does not load is reported, the others still run
            print(f"  ({label}: does not load: {str(exc).splitlines()[0][:160]})")
    image = load_image(photos[0])
    inputs = {label: d.prepare(image) for label, d in detectors.items()}
    cv2.setNumThreads(args.threads)
    cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    blob = make_blob(image, prep)
    lat, lat_cpu = latencies(detectors, cv_net, blob, inputs, args.runs)
    results = {"latency": lat, "latency_cpu": lat_cpu, "throughput": {}}
    for label, detector in detectors.items():
        results["throughput"][label] = folder_rate(detector, photos)
    results["throughput"]["OpenCV 4.x DNN"] = throughput_opencv(prototxt, weights, prep, photos, args.threads)
    results["streams"] = streams_throughput(variants, photos, work, args)
    results["gmac"] = summarize(prototxt).total_multiply_adds / 1e9  # as `caffessd inspect` counts them
    report(name, results, len(photos), args.threads)
    return {"variants": variants, **results}


def streams_throughput(variants, photos, work: Path, args) -> dict:
    """label -> (images/s, CPU ms per image) of `detect --streams THREADS`:
    as many images' inference at once as there are threads, each on a
    1-thread Detector, beside 2 decode threads. On a small CPU whole images
    side by side often use the cores better than one run split over them."""
    rates = {}
    for label, artifact, engine, precision in variants:
        try:
            detector = Detector(artifact=artifact, engine=engine, precision=precision, threads=1,
                                cache=work / "cache", threshold=0.3)
        except Exception:  # reported by the latency part already
            continue
        rates[label] = folder_rate(detector, photos, streams=args.threads)
    return rates


def folder_rate(detector, photos, streams: int = 1) -> tuple:
    """(images/s, CPU ms per image) of detector.detect_many over `photos`, 2
    decode threads, after one untimed pass over four of them: detect_many may
    tune the engine for pipelined work (onnxruntime makes a session whose
    threads never spin), and a new session's first runs are slow."""
    def run(paths):
        return sum(1 for _ in detector.detect_many(paths, workers=2, streams=streams))
    run(photos[:4])
    return timed_images(lambda: run(photos))


def uncapped(label: str) -> bool:
    """Under --max-isa: a variant whose runtime ignores the cap."""
    return bool(capped_isa()) and label.split()[0] not in CAPPED_ENGINES


def report(name, results, count, threads) -> None:
    lat, lat_cpu, thr = results["latency"], results["latency_cpu"], results["throughput"]
    cv_ms, ort_ms = lat["OpenCV 4.x DNN"], lat.get("onnxruntime fp32")
    cv_rate = thr["OpenCV 4.x DNN"][0]
    print(f"\n{name}, {threads} threads: latency (median, inference only) and folder throughput "
          f"({count} photos, decode + preprocess + inference)")
    print(f"  ({results['gmac']:.3f} G multiply-adds per image; GMAC/s: that over the latency)")
    streams = results.get("streams", {})
    print(f"  (img/s: {threads} onnxruntime/engine threads, 2 decode threads; {threads} streams: "
          f"detect --streams {threads}, {threads} images at once on 1 thread each)")
    print(f"  {'variant':<24}{'ms':>8}{'CPU ms':>8}{'GMAC/s':>8}{'x OpenCV':>10}{'x ORT fp32':>12}"
          f"{'img/s':>9}{'x OpenCV':>10}{'CPU ms/img':>12}{f'{threads} streams':>11}{'x OpenCV':>10}")
    for label in lat:
        ms = lat[label]
        rate, cpu = thr[label]
        ort = f"{ort_ms / ms:.2f}" if ort_ms else "-"
        gmac_s = results["gmac"] / ms * 1000
        side = (f"{streams[label][0]:11.1f}{streams[label][0] / cv_rate:10.2f}" if label in streams
                else f"{'-':>11}{'-':>10}")
        shown = label + (" *" if uncapped(label) else "")
        print(f"  {shown:<24}{ms:8.2f}{lat_cpu[label]:8.2f}{gmac_s:8.1f}{cv_ms / ms:10.2f}{ort:>12}"
              f"{rate:9.1f}{rate / cv_rate:10.2f}{cpu:12.1f}{side}")
    best = min((label for label in lat if label != "OpenCV 4.x DNN" and not uncapped(label)), key=lat.get)
    print(f"  fastest: {best} ({cv_ms / lat[best]:.1f}x OpenCV, {ort_ms / lat[best]:.2f}x onnxruntime fp32)")
    folder = {(label, "1 stream"): thr[label][0] for label in thr if label != "OpenCV 4.x DNN" and not uncapped(label)}
    folder.update({(label, f"{threads} streams"): rate for label, (rate, _) in streams.items() if not uncapped(label)})
    (label, how), rate = max(folder.items(), key=lambda item: item[1])
    print(f"  fastest over a folder: {label}, {how} ({rate:.1f} images/s, {rate / cv_rate:.1f}x OpenCV's loop)")


def face_map(variants, work: Path, args) -> None:
    """`caffessd eval` of the face detector's variants side by side on generated face photos."""
    photos, boxes = generate_photos(work / "map", args.map_photos, seed=7)
    write_list_dataset(work / "map", photos, boxes)
    groups = {}
    for label, artifact, engine, precision in variants:
        groups.setdefault((engine, precision), []).append((label, artifact))
    print(f"\nface detector, caffessd eval (VOC07 mAP) on {len(photos)} generated face photos "
          "(not used for calibration):")
    for (engine, precision), items in groups.items():
        extra = ["--engine", engine] + (["--precision", precision] if precision else [])
        text = eval_map([artifact for _, artifact in items] + extra, work / "map", args.threads)
        line = next((row for row in text.splitlines() if row.strip().startswith("mAP")), text.strip()[-200:])
        print(f"  {', '.join(label for label, _ in items):<44} {line.strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per variant (blocks of 10, interleaved)")
    parser.add_argument("--photos", type=int, default=100, help="generated photos for the throughput test")
    parser.add_argument("--calibration", type=int, default=20, help="int8 calibration images")
    parser.add_argument("--models", default="face,mobilenet,ssdlite",
                        help="comma-separated subset of face, mobilenet, ssdlite")
    parser.add_argument("--map", action="store_true", help="also eval mAP of the face detector's variants")
    parser.add_argument("--map-photos", type=int, default=200)
    parser.add_argument("--max-isa", choices=sorted(ISA_CAPS),
                        help="cap OpenVINO's and OpenCV's kernels at this instruction set (an AVX2-only CPU, "
                             "emulated); onnxruntime, ncnn and TFLite have no such switch and stay uncapped")
    args = parser.parse_args()
    if args.max_isa:
        cap_isa(args.max_isa)  # runs the script again under the cap; returns once it is in place
    import cv2

    print("CPU:", cpu_report())
    if capped_isa():
        print(f"instruction sets capped at {capped_isa().upper()} for {' and '.join(CAPPED_ENGINES)} "
              f"({', '.join(f'{k}={v}' for k, v in ISA_CAPS[capped_isa()].items())}); rows marked * are "
              "not capped (onnxruntime, ncnn, TFLite choose kernels by CPUID), nor is onnxruntime's matrix product")
    print(f"OpenCV {cv2.__version__}; {args.threads} threads everywhere")
    try:
        from caffessd.inference.engines.openvino_engine import cpu_capabilities

        import openvino

        print(f"OpenVINO {openvino.__version__}: CPU capabilities {' '.join(cpu_capabilities())}")
    except Exception as exc:
        print(f"OpenVINO not available: {exc}")
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}: providers {' '.join(onnxruntime.get_available_providers())}")
    print_ceilings(args.threads, "at the start")
    wanted = set(args.models.split(","))
    with tempfile.TemporaryDirectory(prefix="caffessd-engines-") as work:
        work = Path(work)
        photos, _ = generate_photos(work / "photos", args.photos)
        calibration = work / "calibration"
        calibration.mkdir()
        for path in photos[-args.calibration:]:
            (calibration / path.name).write_bytes(path.read_bytes())
        models = {}
        if "face" in wanted:
            face = default_model()
            models["YuFaceDetectNet 320x240"] = (face.prototxt, face.caffemodel, face.preprocessing)
        for (name, gen_args), key in zip(GEN_MODELS.items(), ("mobilenet", "ssdlite")):
            if key in wanted:
                models[name] = (*gen_model(name, gen_args, work), MOBILENET_PREP)
        done = {}
        for name, (prototxt, weights, prep) in models.items():
            start = time.perf_counter()
            done[name] = benchmark_model(name, prototxt, weights, prep, work, photos, calibration, args)
            print(f"  ({time.perf_counter() - start:.0f} s)")
        print_ceilings(args.threads, "at the end")
        if args.map and "YuFaceDetectNet 320x240" in done:
            face_map(done["YuFaceDetectNet 320x240"]["variants"], work, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
