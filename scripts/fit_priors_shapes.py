"""Do fitted priors train a better detector? gen-model's default priors against
the priors `caffessd fit-priors --suggest` proposes, on small objects.

The data: generated shapes whose boxes cover 2-8% of the image area (sides 14-28%
of a 128x128 image; caffessd.datasets.synthetic, each class with its own colour
so that a short run is about finding and placing boxes), a trainval and a
held-out test split. The rest is scripts/train_shapes.py's recipe, every step a
`caffessd` command: make-lmdb; gen-model (MobileNet-SSD width 0.5, 96x96) once
with its default priors and once with the flags fit-priors prints for the
trainval boxes; the same training for both (same seed, iterations, solver, train
net edits); merge-bn and `caffessd eval` of each on the test split and on a second,
larger held-out set drawn alike (--holdout-images, another seed).

    python scripts/fit_priors_shapes.py --workdir /tmp/fitp                     # 1000 images, 1500 iterations
    python scripts/fit_priors_shapes.py --workdir /tmp/fitp --iterations 300   # quicker, noisier

Prints coverage (the share of boxes some prior reaches IoU 0.5 with, exact
replay of the fork's matching) on both splits and held-out mAP for each set of
priors; writes a JSON summary to WORKDIR/fit_priors_shapes.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def recipe():
    """scripts/train_shapes.py as a module (its train-net edits and command runner)."""
    spec = importlib.util.spec_from_file_location("train_shapes", ROOT / "scripts" / "train_shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_shapes"] = module
    spec.loader.exec_module(module)
    return module


def prepare(shapes, work: Path, args):
    """The dataset (trainval, test) and a second, larger held-out set drawn alike."""
    from caffessd.datasets.synthetic import write_shapes_voc

    holdout = work / "holdout"
    if not (holdout / "labelmap.prototxt").exists():
        write_shapes_voc(holdout, {"test": args.holdout_images}, size=128, seed=args.seed + 1000, max_objects=3,
                         scale=(0.14, 0.28), colour_hint=True)
    data = work / "data"
    if not (data / "labelmap.prototxt").exists():
        write_shapes_voc(data, {"trainval": args.train_images, "test": args.test_images}, size=128, seed=args.seed,
                         max_objects=3, scale=(0.14, 0.28), colour_hint=True)
    for split in ("trainval", "test"):
        if not (work / f"{split}_lmdb").exists():
            shapes.caffessd("make-lmdb", "-f", "voc", "-s", split, "--labelmap", data / "labelmap.prototxt",
                            "-o", work / f"{split}_lmdb", data)
    return data, holdout


def generate(shapes, work: Path, data: Path, name: str, flags, args) -> Path:
    """gen-model with the recipe's options (plus `flags`), the recipe's train net and solver edits
    (kept as they are when the folder was made with the same flags)."""
    from caffessd import caffe_pb2, protoio

    model = work / name
    made = model / "gen_model_flags.json"
    if made.exists() and json.loads(made.read_text()) == [str(f) for f in flags]:
        return model
    shapes.caffessd("gen-model", "--backbone", "mnv1", "--width", args.width, "--input", args.input,
                    "--labelmap", data / "labelmap.prototxt", "--pretrained-lr-mult", 1, "--batch-size", args.batch,
                    "--lmdb-train", work / "trainval_lmdb", "--lmdb-test", work / "test_lmdb",
                    "--conf-threshold", 0.01, "--init-weights", model / "init.caffemodel", "--seed", args.seed,
                    *flags, "-o", model)
    shapes.simplify_train_net(model / "train.prototxt")
    solver = protoio.read_prototxt(model / "solver_train.prototxt", caffe_pb2.SolverParameter)
    solver.type, solver.base_lr, solver.momentum, solver.momentum2 = "Adam", args.lr, 0.9, 0.999
    solver.lr_policy, solver.gamma = "multistep", 0.1
    solver.stepvalue[:] = [args.iterations * 3 // 4]
    solver.max_iter = solver.snapshot = solver.test_interval = args.iterations
    solver.test_iter[:] = [-(-args.test_images // shapes.test_batch(model / "test.prototxt"))]
    solver.display, solver.random_seed = 100, args.seed
    protoio.write_prototxt(solver, model / "solver_train.prototxt")
    made.write_text(json.dumps([str(f) for f in flags]))
    return model


def coverage(shapes, work: Path, model: Path, data: Path, split: str, suggest: bool = False) -> dict:
    out = work / f"fit_{model.name}_{split}{'_suggest' if suggest else ''}"
    extra = ["--suggest"] if suggest else []
    shapes.caffessd("fit-priors", model / "train.prototxt", "--dataset", data, "-f", "voc", "-s", split,
                    "--out", out, "--no-progress", *extra)
    return json.loads((out / "coverage.json").read_text())


def train_and_eval(shapes, work: Path, model: Path, data: Path, holdout: Path, args) -> dict:
    """Train, merge-bn, eval on the test split and on the extra held-out set; a
    model trained before with the same flags is reused (its train.log and snapshot)."""
    snapshot = model / "snapshot" / f"mobilenet_iter_{args.iterations}.caffemodel"
    if (model / "train.log").exists() and snapshot.exists():
        return _evaluate(shapes, model, data, holdout, (model / "train.log").read_text(), None)
    start = time.time()
    log = shapes.caffessd("train", model / "solver_train.prototxt", "--weights", model / "init.caffemodel",
                          "--no-progress")
    took = time.time() - start
    (model / "train.log").write_text(log)
    shapes.caffessd("merge-bn", "-m", model / "deploy.prototxt", "-w", snapshot, "-o", model / "merged")
    return _evaluate(shapes, model, data, holdout, log, took)


def _evaluate(shapes, model: Path, data: Path, holdout: Path, log: str, took) -> dict:
    maps = {}
    for name, folder in (("eval", data), ("eval_holdout", holdout)):
        if not (model / name / "report.json").exists():
            shapes.caffessd("eval", "--model", model / "merged.prototxt", "--weights", model / "merged.caffemodel",
                            "--dataset", folder, "--format", "voc", "--split", "test", "--labelmap",
                            data / "labelmap.prototxt", "--out", model / name)
        maps[name] = json.loads((model / name / "report.json").read_text())["results"][0]["summary"]["mAP"]
    return {"train_seconds": None if took is None else round(took, 1), "eval_map": maps["eval"],
            "holdout_map": maps["eval_holdout"],
            "test_maps": [float(line.split("=")[1]) for line in log.splitlines() if "detection_eval" in line]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--holdout-images", type=int, default=1000, help="a second held-out set, for eval only")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--input", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    shapes = recipe()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    data, holdout = prepare(shapes, work, args)
    default = generate(shapes, work, data, "default_priors", [], args)
    fitted = coverage(shapes, work, default, data, "trainval", suggest=True)
    chosen = next(s for s in fitted["suggestions"] if s["chosen"])
    suggested = generate(shapes, work, data, "suggested_priors", chosen["gen_model_flags"], args)
    rows = {}
    for name, model in (("default", default), ("suggested", suggested)):
        rows[name] = {"trainval_coverage": coverage(shapes, work, model, data, "trainval")["totals"]["share"],
                      "test_coverage": coverage(shapes, work, model, data, "test")["totals"]["share"],
                      **train_and_eval(shapes, work, model, data, holdout, args)}
    summary = {"flags": chosen["gen_model_flags"], "method": chosen["summary"],
               "args": {k: str(v) for k, v in vars(args).items()}, "results": rows}
    (work / "fit_priors_shapes.json").write_text(json.dumps(summary, indent=1))
    print(f"suggested: {chosen['summary']}\n  gen-model flags: {' '.join(chosen['gen_model_flags'])}")
    print(f"{'priors':<10} {'coverage trainval':>18} {'coverage test':>14} {'mAP test':>9} "
          f"{'mAP held-out':>13} {'train time':>11}")
    for name, row in rows.items():
        took = "-" if row["train_seconds"] is None else f"{row['train_seconds'] / 60:.1f} min"
        print(f"{name:<10} {100 * row['trainval_coverage']:17.1f}% {100 * row['test_coverage']:13.1f}% "
              f"{row['eval_map']:9.4f} {row['holdout_map']:13.4f} {took:>11}")
    return summary


if __name__ == "__main__":
    main()
