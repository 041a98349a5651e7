"""Training throughput and memory of `caffessd train`'s step against plain Keras.

For each input size and net (gen-model MobileNet-SSD and MobileNetV2-SSDLite,
width 1.0), in one process: images/s of one compiled training iteration
(forward with batch-statistics BatchNorm, MultiBoxLoss with matching and
mining, backward, RMSProp update) and of a plain tf.keras MobileNetV2
forward + backward (sum of outputs as the loss, SGD) at the same size and
batch, then their ratio.

Memory per image: each (net, size, batch) steps in a fresh process that
reports its peak RSS; the memory one more image in the batch costs is the
slope of peak RSS between two batch sizes (so TensorFlow's own footprint and
the weights, which do not grow with the batch, are not counted). Keras
MobileNetV2 is measured the same way. CPU only: on a GPU the figure that
matters is tf.config.experimental.get_memory_info.

    python scripts/benchmark_train.py --sizes 300,640 --batch 2 --steps 3
    python scripts/benchmark_train.py --sizes 640 --memory-batches 1,3 --skip speed
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


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


def time_steps(step, steps: int) -> float:
    step()  # trace / warm up
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def caffessd_step(net, size, batch, classes, folder):
    from train_helpers import small_config, synthetic_batches, synthetic_input, write_solver
    from caffessd.train.trainer import Trainer

    backbone, head = net.split("-")
    config = small_config(backbone, head, size=size, classes=classes, batch=batch)
    config.width = 1.0
    path = write_solver(folder, config, max_iter=10 ** 6, test_interval=0, snapshot=0)
    batches = synthetic_batches(batch, size, classes, 2, seed=0)
    trainer = Trainer(path, input_fn=synthetic_input({"TRAIN": batches}), log=lambda line: None, progress=False)

    def step():
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


def make_step(net, size, batch, classes, folder):
    return keras_step(size, batch) if net == "keras-mnv2" else caffessd_step(net, size, batch, classes, folder)


def measure_one(net, size, batch, classes, steps):
    """Child process: step `net` and print its peak RSS (MB) as JSON."""
    with tempfile.TemporaryDirectory() as folder:
        time_steps(make_step(net, size, batch, classes, Path(folder)), steps)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_in_fresh_process(net, size, batch, classes, steps) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, __file__, "--child", net, str(size), str(batch), str(classes), str(steps)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def speed_table(sizes, nets, batch, steps, classes):
    print(f"speed: batch {batch}, {steps} timed steps after 2 warm-up steps, {classes} classes")
    print("GMAC/img: multiply-adds of one image's forward; ratio/MAC: the speed ratio with both nets' "
          "work made equal")
    print(f"{'net':16s} {'size':>5s} {'caffessd img/s':>15s} {'keras img/s':>12s} {'ratio':>6s} "
          f"{'GMAC/img':>9s} {'keras':>6s} {'ratio/MAC':>9s}")
    for size in sizes:
        keras_time = time_steps(keras_step(size, batch), steps)
        keras_work = keras_macs(size)
        for net in nets:
            with tempfile.TemporaryDirectory() as folder:
                our_time = time_steps(caffessd_step(net, size, batch, classes, Path(folder)), steps)
            work = caffessd_macs(net, size, classes)
            ratio = keras_time / our_time
            print(f"{net:16s} {size:5d} {batch / our_time:15.2f} {batch / keras_time:12.2f} {ratio:6.2f} "
                  f"{work / 1e9:9.2f} {keras_work / 1e9:6.2f} {ratio * work / keras_work:9.2f}", flush=True)


def memory_table(sizes, nets, batches, classes):
    small, large = batches
    print(f"memory: peak RSS of a fresh process stepping batch {small} and batch {large} (3 steps each); "
          f"MB per image = slope")
    print(f"{'net':16s} {'size':>5s} {f'peak b={small}':>11s} {f'peak b={large}':>11s} {'MB/img':>7s}")
    for size in sizes:
        for net in ["keras-mnv2"] + nets:
            low = peak_in_fresh_process(net, size, small, classes, 1)
            high = peak_in_fresh_process(net, size, large, classes, 1)
            print(f"{net:16s} {size:5d} {low:11.0f} {high:11.0f} {(high - low) / (large - small):7.0f}", flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        net, size, batch, classes, steps = sys.argv[2], *map(int, sys.argv[3:7])
        return measure_one(net, size, batch, classes, steps)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300,640", help="input sizes, comma-separated")
    parser.add_argument("--batch", type=int, default=4, help="batch of the speed table")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--nets", default="mnv1-ssd,mnv2-ssdlite")
    parser.add_argument("--memory-batches", default="1,3", help="the two batch sizes of the memory slope")
    parser.add_argument("--skip", default="", help="speed and/or memory")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    nets = args.nets.split(",")
    if "speed" not in args.skip:
        speed_table(sizes, nets, args.batch, args.steps, args.classes)
    if "memory" not in args.skip:
        memory_table(sizes, nets, [int(b) for b in args.memory_batches.split(",")], args.classes)


if __name__ == "__main__":
    main()
