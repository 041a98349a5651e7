"""Learning efficiency: held-out mAP of `caffessd train` against torchvision's SSDlite at equal images seen.

Both trainers learn the same generated detection set from scratch: circles,
squares and triangles in random colours (the class is the shape only), of
several sizes, on noisy gradients (caffessd.datasets.synthetic, VOC layout;
1,000 training and 200 held-out images by default). Each sees the same
number of training images, at the same input size and batch, and both are
scored by the same evaluator on the same held-out images (caffessd's VOC07
11-point mAP over the images and boxes that the test net's LMDB holds).

caffessd runs the recipe that docs/training-recipe.md gives a user, each
step a `caffessd` command: make-lmdb, then

    caffessd gen-model --backbone mnv2 --head ssdlite --input 160 --labelmap labelmap.prototxt \\
        --batch-size 16 --max-iter N --from-scratch -o model
    caffessd train model/solver_train.prototxt

(gen-model's defaults plus --max-iter and --from-scratch; the held-out mAP is
the one `caffessd train` logs at each test_interval).

The peer is torchvision's ssdlite320_mobilenet_v3_large (MobileNetV3-Large,
2.2 M parameters with 4 classes; its transform set to the benchmark's fixed
input size), from scratch with the reference recipe of torchvision's
references/detection (train.py, engine.py, presets.py): SGD momentum 0.9,
weight decay 4e-5, a linear warm-up over the first epoch (from 1/1000,
min(1000, iterations per epoch - 1) iterations), cosine annealing per epoch
to the end of the run, the "ssdlite" augmentation (RandomIoUCrop, horizontal
flip). The reference's lr 0.15 is for 8 GPUs x 24 images; scaled linearly to
the batch here (--peer-lr). Its detections (its own post-processing: score
0.001, NMS 0.55, 300 per image) go through caffessd's evaluator.

Needs the `bench` extra (torch, torchvision: CPU is enough) and the `tf` extra.

    python scripts/benchmark_learning.py --workdir /tmp/bl --concurrent                  # 3.2k..16k images, 160x160
    python scripts/benchmark_learning.py --workdir /tmp/bl128 --input 128 --checkpoints 1600,3200,4800,6400,8000 \\
        --skip peer --peer-results /tmp/bl128/results.json       # caffessd again, the peer from a previous run

--train-seed and --peer-seed vary each trainer's own randomness (initial weights,
image order, crops) over the same data; --peer-optimizer adam trains the peer's
net with caffessd's recipe (Adam, linear decay), and --variant sgd caffessd's net
with SGD, to tell the optimiser from the net.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmark_cpu import cpu_report  # noqa: E402

# Objects from 15% to 65% of the image side: the smallest fall below the first
# head's priors (20% of the input), the largest fill most of the image.
OBJECT_SCALE = (0.15, 0.65)
MAX_OBJECTS = 3


# ---------------------------------------------------------------- machine

# ---------------------------------------------------------------- data

def caffessd_cli(*args, log=None) -> str:
    """Run a caffessd command; returns its output, a failure stops the benchmark."""
    result = subprocess.run([sys.executable, "-m", "caffessd", *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"caffessd {args[0]} failed:\n{result.stderr[-3000:]}")
    return result.stderr + result.stdout


def prepare_data(work: Path, train_images: int, test_images: int, size: int, seed: int) -> Path:
    """The class-by-shape set in VOC layout and its two LMDBs (kept between runs)."""
    from caffessd.datasets.synthetic import write_shapes_voc

    data = work / "data"
    if not (data / "labelmap.prototxt").exists():
        write_shapes_voc(data, {"trainval": train_images, "test": test_images}, size=size, seed=seed,
                         scale=OBJECT_SCALE, max_objects=MAX_OBJECTS, colour_hint=False)
    for split in ("trainval", "test"):
        if not (work / f"{split}_lmdb").exists():
            caffessd_cli("make-lmdb", "-f", "voc", "-s", split, "--labelmap", data / "labelmap.prototxt",
                         "-o", work / f"{split}_lmdb", data)
    return data


# ---------------------------------------------------------------- caffessd

def gen_model_args(work: Path, data: Path, args, iterations: int) -> List[str]:
    """The recipe: gen-model's defaults plus the documented flags for a run from scratch."""
    return ["gen-model", "--backbone", "mnv2", "--head", "ssdlite", "--input", str(args.input),
            "--labelmap", str(data / "labelmap.prototxt"), "--batch-size", str(args.batch),
            "--lmdb-train", str(work / "trainval_lmdb"), "--lmdb-test", str(work / "test_lmdb"),
            "--max-iter", str(iterations), "--from-scratch", "-o", str(work / "caffessd")]


# Other caffessd recipes, for the comparisons in docs/training-recipe.md: each is gen-model
# with --max-iter (and the flags named), then the edits a user would make by hand. fan-in and
# msra-heads change only the fillers of today's --from-scratch (its BatchNorm window and its
# first head's priors are today's too); the tables that compare them were measured at the
# commits that wrote them.
VARIANTS = {
    "recipe": "gen-model --max-iter N --from-scratch (the recipe)",
    "published": "gen-model --max-iter N: the published RMSProp solver scaled to the run",
    "readme-adam": "the earlier README recipe: --max-iter N, Adam 0.005 constant then x0.1 for the last quarter, "
                   "mirror and resize only, BatchNorm moving_average_fraction 0.9",
    "sgd": "--from-scratch with SGD momentum 0.9 at --sgd-lr instead of Adam (torchvision's optimizer, no warm-up)",
    "fan-in": "--from-scratch as before its convolutions took msra's FAN_OUT form: msra in Caffe's default "
              "FAN_IN form (the predictors still N(0, 0.03))",
    "msra-heads": "--from-scratch as before its predictors started at N(0, 0.03) (and before FAN_OUT): every "
                  "convolution, the box and class predictors too, filled by msra in its FAN_IN form",
}


def apply_variant(variant: str, model: Path, iterations: int, sgd_lr: float = 0.02) -> None:
    """Edit gen-model's files as the variant says (nothing for the recipe)."""
    from caffessd import caffe_pb2, protoio

    if variant in ("recipe", "published"):
        return
    if variant in ("msra-heads", "fan-in"):
        net = protoio.read_net(model / "train.prototxt")
        for layer in (layer for layer in net.layer if layer.type == "Convolution"):
            filler = layer.convolution_param.weight_filler
            if filler.type == "msra":
                filler.ClearField("variance_norm")  # Caffe's default, FAN_IN
            elif variant == "msra-heads" and layer.top[0].endswith(("_mbox_loc", "_mbox_conf")):
                filler.Clear()
                filler.type = "msra"
        protoio.write_prototxt(net, model / "train.prototxt")
        return
    solver_path = model / "solver_train.prototxt"
    solver = protoio.read_prototxt(solver_path, caffe_pb2.SolverParameter)
    if variant == "sgd":
        solver.type, solver.base_lr, solver.momentum = "SGD", sgd_lr, 0.9
    else:  # readme-adam
        solver.type, solver.base_lr, solver.momentum, solver.momentum2 = "Adam", 0.005, 0.9, 0.999
        solver.lr_policy, solver.gamma = "multistep", 0.1
        solver.stepvalue[:] = [iterations * 3 // 4]
        from train_shapes import simplify_train_net

        simplify_train_net(model / "train.prototxt")
    protoio.write_prototxt(solver, solver_path)


def train_caffessd(work: Path, data: Path, args, checkpoints: Sequence[int]) -> Dict[int, Tuple[float, float]]:
    """{images seen: (held-out mAP, training seconds so far)} from `caffessd train`'s log."""
    from caffessd import caffe_pb2, protoio

    iterations = checkpoints[-1] // args.batch
    command = gen_model_args(work, data, args, iterations)
    if args.variant in ("published", "readme-adam"):
        command.remove("--from-scratch")
    command[-2:-2] = args.gen_model_args.split()
    plain = args.variant == "recipe" and not args.gen_model_args and not args.train_args and args.train_seed is None
    tag = (f"{args.variant}{args.gen_model_args}{args.train_args}"
           + (f"-seed{args.train_seed}" if args.train_seed is not None else ""))
    model = work / ("caffessd" if plain else "caffessd-" + re.sub(r"[^\w.]+", "_", tag))
    command[command.index("-o") + 1] = str(model)
    print("caffessd " + " ".join(command) + ("" if args.variant == "recipe" else f"  (variant {args.variant})"),
          flush=True)
    caffessd_cli(*command)
    apply_variant(args.variant, model, iterations, args.sgd_lr)
    solver_path = model / "solver_train.prototxt"
    solver = protoio.read_prototxt(solver_path, caffe_pb2.SolverParameter)
    if args.train_seed is not None:   # the fillers' and the input pipeline's randomness
        solver.random_seed = args.train_seed
        protoio.write_prototxt(solver, solver_path)
    wanted = {images // args.batch for images in checkpoints}
    tested = set(range(solver.test_interval, iterations + 1, solver.test_interval)) if solver.test_interval else set()
    if not wanted <= tested:
        sys.exit(f"gen-model's test_interval {solver.test_interval} does not test at iterations {sorted(wanted)}: "
                 "choose checkpoints that are multiples of it")
    print(f"caffessd train {solver_path} {args.train_args}".rstrip(), flush=True)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "caffessd", "train", str(solver_path), "--no-progress",
                                *args.train_args.split()],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    # Training time leaves out the held-out tests: each one's time runs from its
    # "Testing net" line to its "detection_eval" line.
    results, testing, tested_since, testing_time, log = {}, None, 0.0, 0.0, []
    for line in process.stderr:
        log.append(line)
        match = re.match(r"Iteration (\d+), Testing net", line)
        if match:
            testing, tested_since = int(match.group(1)), time.perf_counter()
        match = re.search(r"detection_eval = ([\d.eE+-]+)", line)
        if match:
            testing_time += time.perf_counter() - tested_since
            if testing in wanted:
                value = float(match.group(1))
                results[testing * args.batch] = (value, time.perf_counter() - start - testing_time)
                print(f"  caffessd: {testing * args.batch} images, held-out mAP {value:.3f}", flush=True)
    if process.wait():
        sys.exit("caffessd train failed:\n" + "".join(log[-40:]))
    (model / "train.log").write_text("".join(log))
    return results


# ---------------------------------------------------------------- torchvision peer

def peer_model(num_classes: int, size: int):
    """SSDlite320-MobileNetV3-Large from scratch (no weights anywhere), at size x size."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    # Its transform resizes every image to 320x320; the benchmark's input size instead (the
    # anchors follow the feature maps, their steps the image size).
    model.transform = GeneralizedRCNNTransform(size, size, [0.5] * 3, [0.5] * 3, size_divisible=1,
                                               fixed_size=(size, size))
    return model


class VocShapes:
    """The trainval split as torchvision detection samples, with the "ssdlite" augmentation."""

    def __init__(self, root: Path, split: str, labels: Dict[str, int]):
        import torch
        from torchvision.transforms import v2

        self.root = root
        self.names = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        self.labels = labels
        self.transforms = v2.Compose([v2.RandomIoUCrop(), v2.RandomHorizontalFlip(p=0.5),
                                      v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes()])

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        from caffessd.datasets.xmltree import parse_xml

        name = self.names[index]
        image = F.pil_to_tensor(Image.open(self.root / "JPEGImages" / f"{name}.jpg").convert("RGB"))
        boxes, labels = [], []
        xml = self.root / "Annotations" / f"{name}.xml"
        for obj in parse_xml(xml.read_bytes(), xml).findall("object"):
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x0 - 1, y0 - 1, x1, y1])  # VOC's 1-based inclusive corners
            labels.append(self.labels[obj.find("name").text])
        target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=image.shape[-2:]),
                  "labels": torch.tensor(labels, dtype=torch.int64)}
        return self.transforms(tv_tensors.Image(image), target)


def dump_held_out(work: Path, out: Path) -> None:
    """Write the held-out split, exactly as caffessd's test net reads it (its TEST
    AnnotatedData pipeline over the test LMDB), to `out` (.npz): images as float RGB
    0..1 for the peer, ground-truth rows (image, label, xmin, ymin, xmax, ymax,
    difficult) normalised as caffessd's tester keys them. Runs in its own process:
    TensorFlow and torch in one process can crash."""
    from caffessd import protoio
    from caffessd.train.data import build_input

    net = protoio.read_net(work / "caffessd" / "test.prototxt")
    layer = next(layer for layer in net.layer if layer.type == "AnnotatedData")
    transform = layer.transform_param
    mean = np.asarray(list(transform.mean_value) or [0.0], np.float32).reshape(1, -1, 1, 1)
    images, rows = [], []
    for batch, gt in build_input(layer, "TEST", seed=0, root=None):
        pixels = np.asarray(batch) / transform.scale + mean           # BGR 0..255
        offset = len(images)
        images.extend(np.clip(pixels[:, ::-1] / 255.0, 0.0, 1.0).astype(np.float32))
        for row in np.asarray(gt).reshape(-1, 8):
            if row[0] >= 0:
                rows.append([offset + row[0], row[1], *row[3:8]])
    np.savez(out, images=np.stack(images), truth=np.asarray(rows, np.float32).reshape(-1, 7))


def held_out_set(work: Path):
    """(images, ground truth keyed by image index) of the held-out split; see dump_held_out."""
    path = work / "held_out.npz"
    if not path.exists():
        code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import benchmark_learning as b; "
                "b.dump_held_out(Path(sys.argv[2]), Path(sys.argv[3]))")
        subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(work), str(path)], check=True,
                       capture_output=True)
    arrays = np.load(path)
    images = list(arrays["images"])
    truth: Dict[int, list] = {k: [] for k in range(len(images))}
    for row in arrays["truth"]:
        truth[int(row[0])].append((str(int(row[1])), row[2:6], bool(row[6])))
    return images, truth


def evaluate_peer(model, images, truth, num_classes: int, batch: int = 16) -> float:
    """VOC07 11-point mAP of the peer's detections through caffessd's evaluator."""
    import torch

    from caffessd.eval.voc import voc_evaluate

    model.eval()
    detections: Dict[int, list] = {}
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = [torch.from_numpy(np.ascontiguousarray(x)) for x in images[start:start + batch]]
            for k, out in enumerate(model(chunk)):
                height, width = chunk[k].shape[-2:]
                scale = np.array([width, height, width, height], np.float32)
                rows = [(str(int(label)), float(score), box / scale) for box, score, label in
                        zip(out["boxes"].numpy(), out["scores"].numpy(), out["labels"].numpy())]
                detections[start + k] = rows
    model.train()
    classes = [str(label) for label in range(1, num_classes)]
    return voc_evaluate(detections, truth, classes, iou_threshold=0.5, ap_version="11point").mean_ap


def train_peer(work: Path, data: Path, args, checkpoints: Sequence[int]) -> Dict[int, Tuple[float, float]]:
    """torchvision's reference detection recipe for SSDlite; {images: (mAP, training seconds so far)}."""
    # torch's OpenMP threads spin while they wait, which on a CPU shared with other work (or
    # with TensorFlow's pool) costs several times the run time; they sleep instead.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from caffessd import protoio

    seed = args.seed if args.peer_seed is None else args.peer_seed
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    labels = {item.name: item.label for item in protoio.read_labelmap(data / "labelmap.prototxt").item if item.label}
    num_classes = max(labels.values()) + 1
    dataset = VocShapes(data, "trainval", labels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                                         collate_fn=lambda samples: tuple(zip(*samples)),
                                         generator=torch.Generator().manual_seed(seed))
    images, truth = held_out_set(work)
    model = peer_model(num_classes, args.input)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    lr = args.peer_lr if args.peer_lr else 0.15 * args.batch / 192
    iterations = checkpoints[-1] // args.batch
    per_epoch = len(loader)
    epochs = -(-iterations // per_epoch)
    if args.peer_optimizer == "adam":
        # caffessd's recipe on the peer's net: Adam (L2 weight decay in the gradient, as
        # Caffe's), the rate falling linearly to 0 at the last iteration, no warm-up.
        lr = args.peer_lr or 0.005
        optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=5e-5)
        per_step = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1 - it / iterations)
        cosine = warmup = None
        schedule = f"Adam lr {lr:g}, linear decay to 0 (caffessd's recipe)"
    else:
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=4e-5)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / 1000,
                                                   total_iters=min(1000, per_epoch - 1))
        per_step = None
        schedule = f"SGD lr {lr:g} (warm-up {min(1000, per_epoch - 1)} it, cosine over {epochs} epochs)"
    print(f"torchvision SSDlite320-MobileNetV3-Large from scratch, {sum(p.numel() for p in params) / 1e6:.2f} M "
          f"parameters, input {args.input}, {schedule}, RandomIoUCrop + flip", flush=True)
    results, step, evaluating = {}, 0, 0.0
    wanted = {images_seen // args.batch for images_seen in checkpoints}
    start = time.perf_counter()
    for epoch in range(epochs):
        for batch_images, targets in loader:
            losses = model(list(batch_images), list(targets))
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if per_step is not None:
                per_step.step()
            elif epoch == 0:
                warmup.step()
            step += 1
            if step in wanted:
                began = time.perf_counter()
                value = evaluate_peer(model, images, truth, num_classes)
                results[step * args.batch] = (value, began - start - evaluating)
                evaluating += time.perf_counter() - began
                print(f"  peer: {step * args.batch} images, held-out mAP {value:.3f} (loss {loss.item():.3f})",
                      flush=True)
            if step >= iterations:
                break
        if cosine is not None:
            cosine.step()
        if step >= iterations:
            break
    return results


# ---------------------------------------------------------------- report

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--checkpoints", default="3200,6400,9600,12800,16000",
                        help="images seen at which both are tested, the last being the budget; each a whole number "
                             "of the tenths of the run that caffessd tests at (gen-model --max-iter)")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--input", type=int, default=160, help="input side of both nets (and of the images)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--peer-lr", type=float, default=None,
                        help="peer SGD learning rate [default: the reference's 0.15 x batch / 192]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-seed", type=int, help="caffessd's solver random_seed (the data stay those of --seed)")
    parser.add_argument("--sgd-lr", type=float, default=0.02, help="base_lr of --variant sgd")
    parser.add_argument("--peer-optimizer", choices=("sgd", "adam"), default="sgd",
                        help="sgd: the peer's reference recipe; adam: caffessd's recipe (Adam, linear decay) on the "
                             "peer's net, to tell the optimiser from the net")
    parser.add_argument("--peer-seed", type=int,
                        help="the peer's torch seed (initial weights, image order, crops); the data stay those of --seed")
    parser.add_argument("--skip", default="", help="comma-separated: caffessd, peer")
    parser.add_argument("--variant", default="recipe", choices=sorted(VARIANTS),
                        help="caffessd's recipe, or another one to compare: " +
                             "; ".join(f"{k}: {v}" for k, v in VARIANTS.items()))
    parser.add_argument("--gen-model-args", default="",
                        help="more gen-model options for caffessd, e.g. '--conf-loss softmax --lr 0.002'")
    parser.add_argument("--train-args", default="",
                        help="more `caffessd train` options, e.g. '--bn-recompute 20'")
    parser.add_argument("--concurrent", action="store_true", help="run the two trainers at the same time")
    parser.add_argument("--peer-results", type=Path,
                        help="the peer's figures from an earlier run's results.json (same data and checkpoints) "
                             "instead of training it again")
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)  # a child of --concurrent
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    checkpoints = sorted(int(v) for v in args.checkpoints.split(","))
    if any(c % args.batch for c in checkpoints):
        sys.exit(f"--checkpoints must be multiples of --batch {args.batch}")
    skip = set(filter(None, args.skip.split(",")))
    if not args.results:
        print("CPU:", cpu_report())
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(work, args.train_images, args.test_images, args.input, args.seed)
    print(f"data: {args.train_images} training / {args.test_images} held-out {args.input}x{args.input} images, "
          f"circles, squares, triangles in random colours, sides {OBJECT_SCALE[0]:.0%}-{OBJECT_SCALE[1]:.0%} "
          f"of the image, 1-{MAX_OBJECTS} per image", flush=True)
    if not (work / "caffessd" / "test.prototxt").exists():
        caffessd_cli(*gen_model_args(work, data, args, checkpoints[-1] // args.batch))
    held_out_set(work)  # written once, before the trainers start
    results = {}
    if args.concurrent and not skip:
        results = run_concurrently(args)
    else:
        if "caffessd" not in skip:
            results["caffessd"] = train_caffessd(work, data, args, checkpoints)
        if args.peer_results:
            # The peer does not change with caffessd's recipe: a previous run's figures.
            saved = json.loads(args.peer_results.read_text())["peer"]
            results["peer"] = {int(k): tuple(v) for k, v in saved.items()}
        elif "peer" not in skip:
            results["peer"] = train_peer(work, data, args, checkpoints)
    if args.results:
        args.results.write_text(json.dumps({k: {str(i): v for i, v in r.items()} for k, r in results.items()}))
        return
    (work / "results.json").write_text(json.dumps({k: {str(i): v for i, v in r.items()} for k, r in results.items()},
                                                  indent=1))
    report(results, checkpoints)


def run_concurrently(args) -> Dict[str, Dict[int, Tuple[float, float]]]:
    """Both trainers at once, each in its own process (on a shared machine this halves the
    wall time of the benchmark; each trainer's time then counts the other's load)."""
    children = {}
    for name, other in (("caffessd", "peer"), ("peer", "caffessd")):
        path = args.workdir / f"results_{name}.json"
        argv = [a for a in sys.argv[1:] if a != "--concurrent"] + ["--skip", other, "--results", str(path)]
        children[name] = (subprocess.Popen([sys.executable, __file__, *argv]), path)
    results = {}
    for name, (child, path) in children.items():
        if child.wait():
            sys.exit(f"the {name} run failed")
        results[name] = {int(k): tuple(v) for k, v in json.loads(path.read_text())[name].items()}
    return results


def report(results: Dict[str, Dict[int, Tuple[float, float]]], checkpoints: Sequence[int]) -> None:
    names = {"caffessd": "caffessd (MobileNetV2-SSDLite)", "peer": "torchvision SSDlite (MobileNetV3-Large)"}
    header = "| images seen | " + " | ".join(f"{names[k]} mAP | training time" for k in results) + " |"
    print("\n" + header)
    print("|---" * (1 + 2 * len(results)) + "|")
    for images in checkpoints:
        cells = []
        for key in results:
            value, seconds = results[key].get(images, (float("nan"), float("nan")))
            cells.append(f"{value:.3f} | {seconds / 60:.1f} min")
        print(f"| {images} | " + " | ".join(cells) + " |")
    if len(results) == 2:
        ratios = [results["caffessd"][i][0] / max(results["peer"][i][0], 1e-9) for i in checkpoints
                  if i in results["caffessd"] and i in results["peer"]]
        print("caffessd / peer mAP: " + ", ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
