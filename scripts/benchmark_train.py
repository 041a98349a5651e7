"""Training throughput and memory of `caffessd train`'s step against plain Keras.

Speed: for each input size and net (gen-model MobileNet-SSD and MobileNetV2-SSDLite,
width 1.0), images/s of one compiled training iteration as `train` runs it (forward with
batch-statistics BatchNorm, MultiBoxLoss with matching and mining, backward, RMSProp update:
Trainer.train_iteration) and of a plain
tf.keras MobileNetV2 forward + backward (sum of outputs as the loss, SGD) at the same size
and batch, in one process. The two alternate in rounds (each round times `--steps` steps
of each), and every ratio is taken within a round, so that a machine whose load changes
affects both alike; medians over the rounds are printed. `ratio/MAC` divides out the nets'
different amounts of work (multiply-adds of one image, counted the same way for both).
Wall-clock and process CPU time (all threads) are both given: on a busy machine the CPU
time is the steadier figure.

Before/after in the same run: `--baseline REV` measures the git revision REV's caffessd
(checked out to a temporary folder) the same way, in its own process, beside this tree's.

Data: the same step fed by the real input pipeline (an LMDB of generated 500x375 JPEGs
through the gen-model train net's AnnotatedData layer with its full augmentation) against
fixed in-memory batches, interleaved in rounds, and the pipeline alone; the input is not
the bottleneck when the pipeline alone outruns the step.

Allocator: TensorFlow's CPU allocator is chosen per process, so the same step
(fed by the real input pipeline, as `caffessd train` runs it) is timed in fresh
processes with TF_CPU_ALLOCATOR_USE_BFC=false (plain malloc, TensorFlow's
default) and =true (its caching BFC allocator, what caffessd asks for),
alternating: ms per step, minor page faults and kernel CPU time per step.

Memory per image: each (net, size, batch) steps in a fresh process that reports its peak
RSS; the memory one more image in the batch costs is the slope of peak RSS between two batch
sizes (TensorFlow's own footprint and the weights, which do not grow with the batch, are not
counted). Keras MobileNetV2 is measured the same way. CPU only.

    python scripts/benchmark_train.py --sizes 300,640 --batch 2 --steps 3 --baseline 1be621d
    python scripts/benchmark_train.py --sizes 300 --skip memory,data --xla
    python scripts/benchmark_train.py --sizes 300 --skip memory,data,allocator --two-calls --rounds 10
    python scripts/benchmark_train.py --sizes 640 --memory-batches 1,3 --skip speed,data
    python scripts/benchmark_train.py --sizes 300 --batch 8 --skip speed,memory,data   # allocator only
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# The caffessd under test: this checkout, or a baseline revision extracted by the parent.
CODE = Path(os.environ.get("CAFFESSD_BENCH_CODE", ROOT))
sys.path.insert(0, str(CODE))
sys.path.insert(0, str(CODE / "tests"))
from benchmark_cpu import cpu_report  # noqa: E402
# The allocator variable as the user left it: children get this, not what
# caffessd set in this process (a baseline revision decides for itself).
USER_BFC = os.environ.get("TF_CPU_ALLOCATOR_USE_BFC")


def tensorflow_as_caffessd_loads_it():
    """TensorFlow imported the way caffessd's own commands import it (with the
    process settings of that caffessd version), before Keras touches it."""
    from caffessd.train.tfimport import tensorflow

    return tensorflow()


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM starts afresh at exec; ru_maxrss
    would carry the parent's peak into a child."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(step, steps: int):
    """(wall s, process CPU s) per step over `steps` steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def solver_for(net, size, batch, classes, folder):
    from train_helpers import small_config, write_solver

    backbone, head = net.split("-")
    config = small_config(backbone, head, size=size, classes=classes, batch=batch)
    config.width = 1.0
    return write_solver(folder, config, max_iter=10 ** 6, test_interval=0, snapshot=0)


def caffessd_step(net, size, batch, classes, folder, xla=False, input_fn=None, two_calls=False):
    from train_helpers import synthetic_batches, synthetic_input
    from caffessd.train.trainer import Trainer

    folder.mkdir(parents=True, exist_ok=True)
    path = solver_for(net, size, batch, classes, folder)
    if input_fn is None:
        input_fn = synthetic_input({"TRAIN": synthetic_batches(batch, size, classes, 2, seed=0)})
    options = {"xla": True} if xla else {}
    trainer = Trainer(path, input_fn=input_fn, log=lambda line: None, progress=False, **options)

    if hasattr(trainer, "train_iteration") and not two_calls:  # what `train` runs (fused where it applies)
        return trainer.train_iteration

    def step():  # two calls: a baseline revision from before train_iteration, or --two-calls
        _, _, grads = trainer.iteration()
        trainer.solver.step(grads)
    return step


def keras_step(size, batch):
    import tensorflow as tf

    model = tf.keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
    optimizer = tf.keras.optimizers.SGD(0.001)
    images = tf.constant(np.random.default_rng(0).normal(0, 1, (batch, size, size, 3)).astype(np.float32))

    @tf.function
    def train():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(images, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return lambda: train().numpy()


def caffessd_macs(net, size, classes) -> float:
    """Multiply-adds of one image through the deploy net (convolutions, as caffessd inspect counts them)."""
    from train_helpers import small_config
    from caffessd.generators import build_net
    from caffessd.net import Net

    backbone, head = net.split("-")
    config = small_config(backbone, head, size=size, classes=classes, batch=1)
    config.width = 1.0
    return float(sum(info.multiply_adds for info in Net(build_net(config, "deploy")).walk(with_weights=False)))


def keras_macs(size) -> float:
    """Multiply-adds of one image through Keras MobileNetV2 (no top), counted the same way."""
    import tensorflow as tf

    model = tf.keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D"):
            continue
        _, h, w, c_out = layer.output.shape
        kh, kw = layer.kernel_size
        c_in = layer.input.shape[-1]
        total += h * w * c_out * kh * kw * (1 if kind == "DepthwiseConv2D" else c_in)
    return float(total)


def median(values):
    return float(np.median(values))


# ---------------------------------------------------------------- speed (one process per code version)

def speed_child(size, nets, batch, steps, rounds, classes, modes):
    """In the process of one code version: per net and mode, rounds of Keras
    steps then the net's steps; prints one JSON line per net."""
    # mode: "" (as `train` runs it), "xla" or "two-calls"
    variants = [(net, mode) for net in nets for mode in [""] + list(modes)]
    tensorflow_as_caffessd_loads_it()
    keras = keras_step(size, batch)
    keras_work = keras_macs(size)
    with tempfile.TemporaryDirectory() as folder:
        steps_of = {}
        for k, (net, mode) in enumerate(variants):
            steps_of[(net, mode)] = caffessd_step(net, size, batch, classes, Path(folder) / str(k), xla=mode == "xla",
                                                  two_calls=mode == "two-calls")
        for fn in [keras] + list(steps_of.values()):  # trace and warm up
            fn()
            fn()
        samples = {key: [] for key in steps_of}
        for _ in range(rounds):
            for key, fn in steps_of.items():
                k_wall, k_cpu = timed(keras, steps)
                o_wall, o_cpu = timed(fn, steps)
                samples[key].append((k_wall, k_cpu, o_wall, o_cpu))
    for (net, mode), rows in samples.items():
        rows = np.asarray(rows)
        work = caffessd_macs(net, size, classes)
        print(json.dumps({
            "net": net + (f"+{mode}" if mode else ""), "size": size,
            "ours_img_s": batch / median(rows[:, 2]), "keras_img_s": batch / median(rows[:, 0]),
            "ours_cpu_ms": 1000 * median(rows[:, 3]) / batch, "keras_cpu_ms": 1000 * median(rows[:, 1]) / batch,
            "ratio": median(rows[:, 0] / rows[:, 2]), "ratio_cpu": median(rows[:, 1] / rows[:, 3]),
            "mac_factor": work / keras_work, "gmac": work / 1e9, "keras_gmac": keras_work / 1e9}), flush=True)


def run_child(args_list, code: Path, allocator_bfc=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CAFFESSD_BENCH_CODE=str(code))
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    bfc = USER_BFC if allocator_bfc is None else allocator_bfc
    if bfc is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = bfc
    out = subprocess.run([sys.executable, __file__, *map(str, args_list)], capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"benchmark child failed ({code}):\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def speed_table(sizes, nets, batch, steps, rounds, classes, versions, modes):
    print(f"speed: batch {batch}, {rounds} rounds of {steps} steps each (Keras and the net alternating), "
          f"medians; {classes} classes")
    print("ratio = caffessd img/s / Keras img/s; /MAC: with both nets' work made equal; cpu: by process CPU time")
    print("| version | net | size | caffessd img/s | Keras img/s | ratio | GMAC/img (Keras) | ratio/MAC "
          "| CPU ms/img (Keras) | ratio/MAC by CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        for label, code in versions:
            child = ["--child-speed", size, ",".join(nets), batch, steps, rounds, classes,
                     ",".join(modes) if code == ROOT and modes else "-"]
            for r in run_child(child, code):
                print(f"| {label} | {r['net']} | {size} | {r['ours_img_s']:.2f} | {r['keras_img_s']:.2f} | "
                      f"{r['ratio']:.2f} | {r['gmac']:.2f} ({r['keras_gmac']:.2f}) | "
                      f"{r['ratio'] * r['mac_factor']:.2f} | {r['ours_cpu_ms']:.0f} ({r['keras_cpu_ms']:.0f}) | "
                      f"{r['ratio_cpu'] * r['mac_factor']:.2f} |", flush=True)


# ---------------------------------------------------------------- memory

def measure_one(net, size, batch, classes, steps):
    """Child process: step `net` and print its peak RSS (MB) as JSON."""
    tensorflow_as_caffessd_loads_it()
    with tempfile.TemporaryDirectory() as folder:
        step = keras_step(size, batch) if net == "keras-mnv2" else caffessd_step(net, size, batch, classes, Path(folder))
        for _ in range(2 + steps):
            step()
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def memory_table(sizes, nets, batches, classes, versions):
    small, large = batches
    print(f"memory: peak RSS of a fresh process stepping batch {small} and batch {large} (3 steps each); "
          f"MB per image = slope")
    print(f"| version | net | size | peak b={small} | peak b={large} | MB/img |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        for label, code in versions:
            for net in (["keras-mnv2"] if code == ROOT else []) + nets:
                low = run_child(["--child-memory", net, size, small, classes, 1], code)[0]["peak_rss_mb"]
                high = run_child(["--child-memory", net, size, large, classes, 1], code)[0]["peak_rss_mb"]
                print(f"| {label if net != 'keras-mnv2' else 'Keras'} | {net} | {size} | {low:.0f} | {high:.0f} | "
                      f"{(high - low) / (large - small):.0f} |", flush=True)


# ---------------------------------------------------------------- allocator

def fed_step(net, size, batch, classes, folder: Path, source: Path):
    """caffessd's step fed by the TRAIN input pipeline from the LMDB `source`."""
    from caffessd.train.inputs import build_input

    def real_input(data_layer, phase="TRAIN", **kw):
        data_layer.data_param.source = str(source)
        return build_input(data_layer, phase, **kw)
    return caffessd_step(net, size, batch, classes, folder, input_fn=real_input)


def allocator_child(net, size, batch, classes, steps, source):
    """Child process: ms, CPU ms, kernel CPU ms and minor page faults per step."""
    tensorflow_as_caffessd_loads_it()
    with tempfile.TemporaryDirectory() as folder:
        step = fed_step(net, size, batch, classes, Path(folder), Path(source))
        for _ in range(3):
            step()
        before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(steps):
            step()
        wall, after = time.perf_counter() - wall, resource.getrusage(resource.RUSAGE_SELF)
    import tensorflow as tf

    try:
        tf.config.experimental.get_memory_info("CPU:0")  # only the BFC allocator keeps statistics
        allocator = "bfc"
    except ValueError:
        allocator = "malloc"
    print(json.dumps({"allocator": allocator, "ms": 1000 * wall / steps,
                      "cpu_ms": 1000 * (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / steps,
                      "sys_ms": 1000 * (after.ru_stime - before.ru_stime) / steps,
                      "faults": (after.ru_minflt - before.ru_minflt) / steps}), flush=True)


def allocator_table(sizes, nets, batch, steps, rounds, classes, images):
    print(f"allocator: the step fed by the input pipeline (LMDB of {images} 500x375 JPEGs), batch {batch}, in fresh "
          f"processes with TensorFlow's default malloc allocator and its BFC allocator, {rounds} rounds of "
          f"{steps} steps alternating, medians")
    print("| net | size | malloc ms/step | BFC ms/step | speed-up | page faults/step (malloc / BFC) | "
          "kernel share of CPU (malloc / BFC) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        source = make_lmdb(Path(folder), images)
        for size in sizes:
            for net in nets:
                runs = {"false": [], "true": []}
                for _ in range(rounds):
                    for bfc in runs:
                        child = ["--child-allocator", net, size, batch, classes, steps, source]
                        runs[bfc].append(run_child(child, ROOT, allocator_bfc=bfc)[0])
                assert {r["allocator"] for r in runs["false"]} == {"malloc"}, runs["false"]
                assert {r["allocator"] for r in runs["true"]} == {"bfc"}, runs["true"]
                plain, bfc = ({key: median([r[key] for r in rows]) for key in rows[0] if key != "allocator"}
                              for rows in (runs["false"], runs["true"]))
                print(f"| {net} | {size} | {plain['ms']:.0f} | {bfc['ms']:.0f} | {plain['ms'] / bfc['ms']:.2f} | "
                      f"{plain['faults']:.0f} / {bfc['faults']:.0f} | {plain['sys_ms'] / plain['cpu_ms']:.0%} / "
                      f"{bfc['sys_ms'] / bfc['cpu_ms']:.0%} |", flush=True)


# ---------------------------------------------------------------- data

def make_lmdb(folder: Path, count: int) -> Path:
    from train_data_helpers import noise_items, write_lmdb

    return write_lmdb(folder / "bench_lmdb", noise_items(count, min_side=40), encode=".jpg")


def pipeline_alone(layer, batches: int):
    """(img/s, CPU ms per image) of the TRAIN pipeline by itself."""
    from caffessd.train.inputs import build_input

    iterator = iter(build_input(layer, "TRAIN", seed=0))
    for _ in range(2):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    count = 0
    for _ in range(batches):
        count += int(next(iterator)[0].shape[0])
    return count / (time.perf_counter() - wall), 1000 * (time.process_time() - cpu) / count


def data_table(sizes, nets, batch, steps, rounds, classes, images):
    from caffessd import protoio
    from caffessd.train.data import find_data_layer

    print(f"data: the step fed by the input pipeline (gen-model's train net: distortion, expansion, 7 samplers, "
          f"mirror; an LMDB of {images} 500x375 JPEGs) against fixed batches; batch {batch}, {rounds} rounds of "
          f"{steps} steps, medians")
    print("| net | size | step, fixed batches img/s | step, with data img/s | with / without | "
          "pipeline alone img/s | pipeline CPU ms/img | step CPU ms/img |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        source = make_lmdb(folder, images)
        for size in sizes:
            for k, net in enumerate(nets):
                fixed = caffessd_step(net, size, batch, classes, folder / f"fixed{size}_{k}")
                fed_dir = folder / f"fed{size}_{k}"
                fed = fed_step(net, size, batch, classes, fed_dir, source)
                layer = find_data_layer(protoio.read_net(fed_dir / "train.prototxt"), "TRAIN")
                for fn in (fixed, fed):
                    fn()
                    fn()
                rows = []
                for _ in range(rounds):
                    rows.append(timed(fixed, steps) + timed(fed, steps))
                rows = np.asarray(rows)
                layer.data_param.source = str(source)
                layer.data_param.batch_size = batch
                alone, alone_cpu = pipeline_alone(layer, max(4, steps * rounds))
                print(f"| {net} | {size} | {batch / median(rows[:, 0]):.2f} | {batch / median(rows[:, 2]):.2f} | "
                      f"{median(rows[:, 0] / rows[:, 2]):.2f} | {alone:.1f} | {alone_cpu:.0f} | "
                      f"{1000 * median(rows[:, 1]) / batch:.0f} |", flush=True)


# ---------------------------------------------------------------- main

def baseline_code(revision: str, folder: Path) -> Path:
    """The caffessd package and tests of git revision `revision`, extracted to `folder`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "caffessd", "tests"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child-memory":
        net, size, batch, classes, steps = sys.argv[2], *map(int, sys.argv[3:7])
        return measure_one(net, size, batch, classes, steps)
    if len(sys.argv) > 1 and sys.argv[1] == "--child-allocator":
        net, (size, batch, classes, steps), source = sys.argv[2], map(int, sys.argv[3:7]), sys.argv[7]
        return allocator_child(net, size, batch, classes, steps, source)
    if len(sys.argv) > 1 and sys.argv[1] == "--child-speed":
        size, nets, (batch, steps, rounds, classes) = int(sys.argv[2]), sys.argv[3].split(","), map(int, sys.argv[4:8])
        modes = [] if sys.argv[8] == "-" else sys.argv[8].split(",")
        return speed_child(size, nets, batch, steps, rounds, classes, modes)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300,640", help="input sizes, comma-separated")
    parser.add_argument("--batch", type=int, default=2, help="batch of the speed and data tables")
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--nets", default="mnv1-ssd,mnv2-ssdlite")
    parser.add_argument("--baseline", metavar="REV", help="also measure git revision REV (before/after in one run)")
    parser.add_argument("--xla", action="store_true", help="also time this tree's step with Trainer(xla=True)")
    parser.add_argument("--two-calls", action="store_true",
                        help="also time this tree's step as two calls (iteration, then solver.step)")
    parser.add_argument("--memory-batches", default="1,3", help="the two batch sizes of the memory slope")
    parser.add_argument("--data-images", type=int, default=120, help="JPEGs in the data part's LMDB")
    parser.add_argument("--skip", default="", help="speed, memory, allocator and/or data")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    nets = args.nets.split(",")
    print("CPU:", cpu_report())
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        versions = [("this tree", ROOT)]
        if args.baseline:
            versions.insert(0, (f"before ({args.baseline})", baseline_code(args.baseline, Path(folder))))
        if "speed" not in args.skip:
            modes = (["xla"] if args.xla else []) + (["two-calls"] if args.two_calls else [])
            speed_table(sizes, nets, args.batch, args.steps, args.rounds, args.classes, versions, modes)
        if "memory" not in args.skip:
            memory_table(sizes, nets, [int(b) for b in args.memory_batches.split(",")], args.classes, versions)
    if "allocator" not in args.skip:
        allocator_table(sizes, nets, args.batch, args.steps, args.rounds, args.classes, args.data_images)
    if "data" not in args.skip:
        data_table(sizes, nets, args.batch, args.steps, args.rounds, args.classes, args.data_images)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
