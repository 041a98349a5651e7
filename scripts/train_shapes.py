"""Train a small MobileNet-SSD on the generated shapes dataset, through the CLI, to a held-out mAP.

The whole user workflow, each step a `caffessd` command: a shapes dataset in VOC
layout (caffessd.datasets.synthetic), make-lmdb for its trainval and test
splits, gen-model for a small net, `caffessd train` from gen-model's initial
weights (testing the held-out split every --test-interval iterations; the
loss/mAP curves go to snapshot/mobilenet_curves.png), then merge-bn on the
last snapshot and `caffessd eval` of the merged deploy net on the test split;
finally every export of the merged net (ONNX fp32 and int8, OpenVINO, ncnn, TFLite; those
whose runtime is installed) and `caffessd eval` of each: what each artifact costs in mAP.

    python scripts/train_shapes.py --workdir /tmp/shapes                       # 3000 iterations
    python scripts/train_shapes.py --workdir /tmp/shapes --iterations 300 --train-images 400

Edits to gen-model's files, each what a user training from scratch would do:
the train net keeps mirror and resize but drops the photometric distortion,
expansion and crop samplers (a few thousand iterations are too few for them to
pay off), BatchNorm's moving_average_fraction goes from 0.999 to 0.9 (with 0.999
the test-time statistics average the first iterations' very different ones in),
and the solver is Adam at a fixed rate, then a tenth of it for the last quarter.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def caffessd(*args) -> str:
    """Run a caffessd command; its stderr (log) is returned, a failure stops the script."""
    result = subprocess.run([sys.executable, "-m", "caffessd", *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"caffessd {args[0]} failed:\n{result.stderr[-3000:]}")
    return result.stderr + result.stdout


def prepare(work: Path, train_images: int, test_images: int, seed: int) -> Path:
    from caffessd.datasets.synthetic import write_shapes_voc

    data = work / "data"
    if not (data / "labelmap.prototxt").exists():
        write_shapes_voc(data, {"trainval": train_images, "test": test_images}, size=128, seed=seed,
                         colour_hint=True)
    for split in ("trainval", "test"):
        if not (work / f"{split}_lmdb").exists():
            caffessd("make-lmdb", "-f", "voc", "-s", split, "--labelmap", data / "labelmap.prototxt",
                     "-o", work / f"{split}_lmdb", data)
    return data


def generate(work: Path, data: Path, args) -> Path:
    from caffessd import caffe_pb2, protoio

    model = work / "model"
    caffessd("gen-model", "--backbone", "mnv1", "--width", args.width, "--input", args.input,
             "--labelmap", data / "labelmap.prototxt", "--pretrained-lr-mult", 1, "--batch-size", args.batch,
             "--lmdb-train", work / "trainval_lmdb", "--lmdb-test", work / "test_lmdb",
             "--conf-threshold", 0.01, "--init-weights", model / "init.caffemodel", "--seed", args.seed, "-o", model)
    simplify_train_net(model / "train.prototxt")
    solver = protoio.read_prototxt(model / "solver_train.prototxt", caffe_pb2.SolverParameter)
    solver.type, solver.base_lr, solver.momentum, solver.momentum2 = "Adam", args.lr, 0.9, 0.999
    solver.lr_policy, solver.gamma = "multistep", 0.1
    solver.stepvalue[:] = [args.iterations * 3 // 4]
    solver.max_iter = solver.snapshot = args.iterations
    solver.test_interval = args.test_interval
    solver.test_iter[:] = [-(-args.test_images // test_batch(model / "test.prototxt"))]
    solver.display, solver.random_seed = 50, args.seed
    protoio.write_prototxt(solver, model / "solver_train.prototxt")
    evaluation = protoio.read_prototxt(model / "solver_test.prototxt", caffe_pb2.SolverParameter)
    evaluation.test_iter[:] = solver.test_iter  # the test.sh solver: max_iter 0, one test pass
    protoio.write_prototxt(evaluation, model / "solver_test.prototxt")
    return model


def simplify_train_net(path: Path) -> None:
    """Drop the heavy augmentations; BatchNorm statistics that follow a short run."""
    from caffessd import protoio

    net = protoio.read_net(path)
    for layer in net.layer:
        if layer.type == "AnnotatedData":
            layer.transform_param.ClearField("distort_param")
            layer.transform_param.ClearField("expand_param")
            del layer.annotated_data_param.batch_sampler[1:]  # the first is the whole image
        if layer.type == "BatchNorm":
            layer.batch_norm_param.moving_average_fraction = 0.9
    protoio.write_prototxt(net, path)


def test_batch(path: Path) -> int:
    from caffessd import protoio

    data = next(layer for layer in protoio.read_net(path).layer if layer.type == "AnnotatedData")
    return data.data_param.batch_size


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--test-interval", type=int, default=500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--input", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-artifacts", dest="artifacts", action="store_false",
                        help="skip the deployment step (every export of the merged net, and eval of each)")
    return parser.parse_args(argv)


def workflow(args) -> dict:
    """Every step of the recipe; returns what a person would look at."""
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    data = prepare(work, args.train_images, args.test_images, args.seed)
    model = generate(work, data, args)
    start = time.time()
    log = caffessd("train", model / "solver_train.prototxt", "--weights", model / "init.caffemodel", "--no-progress")
    took = time.time() - start
    (work / "train.log").write_text(log)
    snapshot = model / "snapshot" / f"mobilenet_iter_{args.iterations}.caffemodel"
    caffessd("merge-bn", "-m", model / "deploy.prototxt", "-w", snapshot, "-o", model / "merged")
    caffessd("eval", "--model", model / "merged.prototxt", "--weights", model / "merged.caffemodel",
             "--dataset", data, "--format", "voc", "--split", "test", "--labelmap", data / "labelmap.prototxt",
             "--out", work / "eval")
    report = json.loads((work / "eval" / "report.json").read_text())
    artifacts = artifact_comparison(work, data, model) if args.artifacts else None
    return {"artifacts": artifacts, "data": data, "model": model, "snapshot": snapshot, "train_seconds": took,
            "test_maps": [float(line.split("=")[1]) for line in log.splitlines() if "detection_eval" in line],
            "eval_map": report["results"][0]["summary"]["mAP"], "curves": model / "snapshot" / "mobilenet_curves.png"}


def runnable(engine: str, *export_needs: str) -> bool:
    """Whether `engine`'s runtime (caffessd's engine registry) and the modules its
    export needs (NNCF for OpenVINO int8, TensorFlow for TFLite) are installed."""
    import importlib.util

    from caffessd.inference.engines import engine_class

    return engine_class(engine).available() and all(importlib.util.find_spec(m) for m in export_needs)


def artifact_comparison(work: Path, data: Path, model: Path) -> dict:
    """The merged net as every artifact a user can ship (fp32 ONNX, onnxruntime
    int8; OpenVINO f32, bf16 and NNCF int8; ncnn f32 and f16; TFLite f32, fp16
    and int8), int8 ones calibrated on 100 trainval images, each evaluated by
    `caffessd eval` on the held-out split: {artifact: mAP}. Artifacts whose
    runtime is not installed are left out."""
    merged = (model / "merged.prototxt", model / "merged.caffemodel")
    out = model / "artifacts"
    out.mkdir(exist_ok=True)
    calibrate = ("--calibrate", work / "trainval_lmdb")
    f32 = {"onnxruntime fp32": out / "fp32.onnx"}
    caffessd("export-onnx", *merged, "-o", f32["onnxruntime fp32"])
    caffessd("quantize", f32["onnxruntime fp32"], *calibrate, "--images", 100, "-o", out / "int8.onnx")
    f32["onnxruntime int8"] = out / "int8.onnx"
    later = []   # (name, artifact, eval options) that need a precision of their own
    if runnable("openvino", "nncf"):
        caffessd("export-openvino", *merged, "-o", out / "ov.xml")
        caffessd("export-openvino", *merged, "-o", out / "ov-int8.xml", "--int8", *calibrate, "--images", 100)
        f32.update({"OpenVINO f32": out / "ov.xml", "OpenVINO int8": out / "ov-int8.xml"})
        later.append(("OpenVINO bf16", out / "ov.xml", ("--precision", "bf16")))
    if runnable("ncnn"):
        caffessd("export-ncnn", *merged, "-o", out / "ncnn.param")
        caffessd("export-ncnn", *merged, "-o", out / "ncnn-fp16.param", "--fp16")
        f32["ncnn f32"] = out / "ncnn.param"
        later.append(("ncnn f16 (fp16 weights and arithmetic)", out / "ncnn-fp16.param", ("--precision", "f16")))
    if runnable("tflite", "tensorflow"):
        caffessd("export-tflite", *merged, "-o", out / "model.tflite")
        caffessd("export-tflite", *merged, "-o", out / "fp16.tflite", "--fp16")
        caffessd("export-tflite", *merged, "-o", out / "int8.tflite", "--int8", *calibrate)
        f32.update({"TFLite f32": out / "model.tflite", "TFLite fp16": out / "fp16.tflite",
                    "TFLite int8": out / "int8.tflite"})
    maps = evaluate(work, data, "eval_artifacts", list(f32.values()))
    results = {name: maps[str(path)] for name, path in f32.items()}
    for index, (name, path, options) in enumerate(later):
        results[name] = evaluate(work, data, f"eval_artifacts{index}", [path], options)[str(path)]
    return results


def evaluate(work: Path, data: Path, report: str, models, options=()) -> dict:
    """`caffessd eval` of `models` on the held-out split: {model path: mAP}."""
    caffessd("eval", *models, *options, "--dataset", data, "--format", "voc", "--split", "test",
             "--labelmap", data / "labelmap.prototxt", "--out", work / report)
    results = json.loads((work / report / "report.json").read_text())["results"]
    return {str(path): result["summary"]["mAP"] for path, result in zip(models, results)}


def main() -> None:
    args = parse_args()
    result = workflow(args)
    took = result["train_seconds"]
    print(f"trained {args.iterations} iterations of batch {args.batch} on {args.train_images} images "
          f"in {took / 60:.1f} min ({args.iterations * args.batch / took:.1f} img/s)")
    print("test mAP during training (detection_eval):", ", ".join(f"{v:.3f}" for v in result["test_maps"]))
    print(f"merged deploy net, caffessd eval on {args.test_images} held-out images: mAP {result['eval_map']:.4f} (voc07)")
    if result["artifacts"]:
        reference = result["artifacts"]["onnxruntime fp32"]
        print(f"\nthe merged net as each artifact, caffessd eval (voc07) on the {args.test_images} held-out images:")
        print("| artifact | mAP | change against fp32 ONNX |\n|---|---|---|")
        for name, value in result["artifacts"].items():
            print(f"| {name} | {value:.4f} | {value - reference:+.4f} |")
    print(f"curves: {result['curves']}; PR curves: {args.workdir / 'eval'}")


if __name__ == "__main__":
    main()
