"""Fine-tuning across class sets: a net pre-trained on one generated dataset, fine-tuned
to another with different classes, against the same net trained from scratch.

Every step is a `caffessd` command, as a user runs them:

1. Two shapes datasets in VOC layout (caffessd.datasets.synthetic, class by shape only,
   random colours, unless --colour-hint gives each class its own colour too): A with
   circles, squares and triangles, B with crosses and diamonds
   (another number of classes, so B's class heads, the *_mbox_conf convolutions, have
   other shapes than A's); make-lmdb for each split.
2. gen-model for each (MobileNet-SSD, width 0.5, 96x96, the same architecture), the
   heavy augmentations dropped and Adam as in scripts/train_shapes.py.
3. `caffessd train` on A from gen-model's initial weights.
4. On B, the same solver and the same number of iterations twice:
   from scratch (`--weights init.caffemodel`) and fine-tuned from A's last snapshot
   (`--weights A.caffemodel --skip-mismatched`: the class heads keep B's fillers, every
   other layer starts from A). The held-out test mAP of both at each test interval.

    python scripts/finetune_shapes.py --workdir /tmp/finetune
    python scripts/finetune_shapes.py --workdir /tmp/ft --pretrain-iterations 300 --iterations 100 --test-interval 50

Writes finetune_curves.png (held-out mAP of both runs against iterations) in the workdir.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

CLASSES_A = ("circle", "square", "triangle")
CLASSES_B = ("cross", "diamond")


def caffessd(*args) -> str:
    """Run a caffessd command; its stderr (the log) is returned, a failure stops the script."""
    result = subprocess.run([sys.executable, "-m", "caffessd", *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"caffessd {args[0]} failed:\n{result.stderr[-3000:]}")
    return result.stderr + result.stdout


def prepare(work: Path, name: str, shapes, train: int, test: int, seed: int, colour_hint: bool) -> Path:
    """The dataset `name` (VOC folder, labelmap) and its trainval/test LMDBs under work/name."""
    from caffessd.datasets.synthetic import write_shapes_voc

    root = work / name
    data = root / "data"
    if not (data / "labelmap.prototxt").exists():
        write_shapes_voc(data, {"trainval": train, "test": test}, size=128, seed=seed, shapes=shapes,
                         colour_hint=colour_hint)
    for split in ("trainval", "test"):
        if not (root / f"{split}_lmdb").exists():
            caffessd("make-lmdb", "-f", "voc", "-s", split, "--labelmap", data / "labelmap.prototxt",
                     "-o", root / f"{split}_lmdb", data)
    return root


def generate(root: Path, args, iterations: int, test_images: int) -> Path:
    """gen-model's nets for the dataset at `root`, with the recipe's edits (see train_shapes.py)."""
    from caffessd import caffe_pb2, protoio

    model = root / "model"
    caffessd("gen-model", "--backbone", "mnv1", "--width", args.width, "--input", args.input,
             "--labelmap", root / "data" / "labelmap.prototxt", "--pretrained-lr-mult", 1,
             "--batch-size", args.batch, "--lmdb-train", root / "trainval_lmdb", "--lmdb-test", root / "test_lmdb",
             "--conf-threshold", 0.01, "--init-weights", model / "init.caffemodel", "--seed", args.seed, "-o", model)
    net = protoio.read_net(model / "train.prototxt")
    for layer in net.layer:
        if layer.type == "AnnotatedData":
            layer.transform_param.ClearField("distort_param")
            layer.transform_param.ClearField("expand_param")
            del layer.annotated_data_param.batch_sampler[1:]
        if layer.type == "BatchNorm":
            layer.batch_norm_param.moving_average_fraction = 0.9
    protoio.write_prototxt(net, model / "train.prototxt")
    test_batch = next(layer for layer in protoio.read_net(model / "test.prototxt").layer
                      if layer.type == "AnnotatedData").data_param.batch_size
    solver = protoio.read_prototxt(model / "solver_train.prototxt", caffe_pb2.SolverParameter)
    solver.type, solver.base_lr, solver.momentum, solver.momentum2 = "Adam", args.lr, 0.9, 0.999
    solver.lr_policy, solver.gamma = "multistep", 0.1
    solver.stepvalue[:] = [iterations * 3 // 4]
    solver.max_iter = solver.snapshot = iterations
    solver.test_interval = min(args.test_interval, iterations)
    solver.test_initialization = False
    solver.test_iter[:] = [-(-test_images // test_batch)]
    solver.display, solver.random_seed = 50, args.seed
    protoio.write_prototxt(solver, model / "solver_train.prototxt")
    return model


def solver_copy(model: Path, name: str) -> Path:
    """The train solver with its own snapshot prefix (two runs on one model folder)."""
    from caffessd import caffe_pb2, protoio

    solver = protoio.read_prototxt(model / "solver_train.prototxt", caffe_pb2.SolverParameter)
    solver.snapshot_prefix = str(model / "snapshot" / name)
    path = model / f"solver_{name}.prototxt"
    protoio.write_prototxt(solver, path)
    return path


def test_maps(log: str):
    """[(iteration, held-out mAP)] from a train log."""
    result, iteration = [], None
    for line in log.splitlines():
        match = re.match(r"Iteration (\d+), Testing net", line)
        if match:
            iteration = int(match.group(1))
        match = re.search(r"detection_eval = ([\d.e+-]+)", line)
        if match:
            result.append((iteration, float(match.group(1))))
    return result


def skipped_layers(log: str):
    """The '  layer: file (...), net (...)' lines --skip-mismatched prints."""
    return [line.strip() for line in log.splitlines() if line.startswith("  ") and ": file (" in line]


def workflow(args) -> dict:
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    a = prepare(work, "A", CLASSES_A, args.pretrain_images, args.test_images, args.seed, args.colour_hint)
    b = prepare(work, "B", CLASSES_B, args.train_images, args.test_images, args.seed + 1, args.colour_hint)
    model_a = generate(a, args, args.pretrain_iterations, args.test_images)
    model_b = generate(b, args, args.iterations, args.test_images)
    start = time.time()
    log_a = caffessd("train", model_a / "solver_train.prototxt", "--weights", model_a / "init.caffemodel",
                     "--no-progress", "--no-tensorboard")
    pretrain_seconds = time.time() - start
    pretrained = model_a / "snapshot" / f"mobilenet_iter_{args.pretrain_iterations}.caffemodel"
    runs = {}
    for name, weights, extra in (("scratch", model_b / "init.caffemodel", []),
                                 ("finetuned", pretrained, ["--skip-mismatched"])):
        start = time.time()
        log = caffessd("train", solver_copy(model_b, name), "--weights", weights, *extra, "--no-progress")
        (work / f"train_{name}.log").write_text(log)
        runs[name] = {"maps": test_maps(log), "seconds": time.time() - start, "log": log}
    return {"pretrain_maps": test_maps(log_a), "pretrain_seconds": pretrain_seconds, "runs": runs,
            "skipped": skipped_layers(runs["finetuned"]["log"]), "model_b": model_b,
            "plot": plot(work / "finetune_curves.png", runs, args)}


def plot(path: Path, runs, args) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for name, run in runs.items():
        steps, values = zip(*run["maps"]) if run["maps"] else ((), ())
        axis.plot(steps, values, "o-", label=f"{name} ({'A weights, heads skipped' if name == 'finetuned' else 'fillers'})")
    axis.set_xlabel(f"iteration on B (batch {args.batch})")
    axis.set_ylabel(f"held-out mAP on B ({args.test_images} images)")
    axis.set_ylim(0, 1)
    axis.set_title(f"B = {', '.join(CLASSES_B)}; A = {', '.join(CLASSES_A)} ({args.pretrain_iterations} it.)")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--pretrain-images", type=int, default=2000, help="A's training images")
    parser.add_argument("--pretrain-iterations", type=int, default=2000)
    parser.add_argument("--train-images", type=int, default=1000, help="B's training images")
    parser.add_argument("--test-images", type=int, default=200, help="held-out images of each dataset")
    parser.add_argument("--iterations", type=int, default=600, help="iterations on B, for each run")
    parser.add_argument("--test-interval", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--input", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colour-hint", action="store_true",
                        help="each class also has its own colour in both datasets (learnt in far fewer iterations)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    result = workflow(args)
    a_maps = result["pretrain_maps"]
    print(f"A ({', '.join(CLASSES_A)}): {args.pretrain_iterations} iterations in {result['pretrain_seconds'] / 60:.1f} min, "
          f"held-out mAP {a_maps[-1][1]:.3f}" if a_maps else "A: no test")
    print(f"B ({', '.join(CLASSES_B)}), {args.iterations} iterations of batch {args.batch} each; "
          f"--skip-mismatched kept B's fillers for: {len(result['skipped'])} layers")
    for line in result["skipped"]:
        print("   ", line)
    scratch, tuned = result["runs"]["scratch"]["maps"], result["runs"]["finetuned"]["maps"]
    print(f"{'iteration':>9s} {'scratch':>8s} {'fine-tuned':>10s}")
    for (step, s), (_, f) in zip(scratch, tuned):
        print(f"{step:9d} {s:8.3f} {f:10.3f}")
    print(f"curves: {result['plot']}")


if __name__ == "__main__":
    main()
