"""Run by test_train_distributed in a fresh process (logical devices must be set
before TensorFlow starts): the same small net on one device and with
MirroredStrategy over 2 logical CPUs on the same global batches.

    python tests/train_distributed_run.py weights BN STEPS SIZE [-v]
        train STEPS SGD steps (no hard-negative mining); print the largest
        weight difference relative to each blob's magnitude ("worst").
    python tests/train_distributed_run.py grads BN SIZE [nomining] [-v]
        one iteration (the net's MAX_NEGATIVE mining unless nomining), eagerly; print the largest
        relative difference of the gradients and of BatchNorm's updated running sums,
        mirrored vs one device ("worst"), and the
        float32 rounding floor of the same net: one device with TensorFlow's
        fused BatchNorm kernel vs the two-pass form, which is the same arithmetic
        in another order ("floor").

BatchNorm over a 1x1 map of 4 images is badly conditioned (its backward
projects the upstream gradient onto a 2-d space; what is left can be a small
difference of large terms), so in float32 its gradients carry relative rounding
noise of ~1e-3 to 0.2 whatever computes them (measured by "floor"). With
`float64` the blobs and images are float64 (the fused kernel is float32-only,
so floor is 0): the mirrored and single-device results then agree to ~1e-10,
which shows the distributed arithmetic is exact and the float32 gap is rounding.
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import small_config, synthetic_batches, synthetic_input, write_solver  # noqa: E402
from caffessd import caffe_pb2, protoio  # noqa: E402
from caffessd.train.executor import normalization  # noqa: E402
from caffessd.train.trainer import Trainer  # noqa: E402

VERBOSE = "-v" in sys.argv


def make_trainer(bn, size, steps, batches, strategy, mining=True, compiled=True):
    folder = Path(tempfile.mkdtemp())
    path = write_solver(folder, small_config(size=size, batch=4, bn=bn), max_iter=steps, random_seed=2, test_interval=0,
                        snapshot=0, snapshot_after_train=False, type="SGD", momentum=0.9, base_lr=0.001)
    if not mining:
        net = protoio.read_net(folder / "train.prototxt")
        for layer in net.layer:
            if layer.type == "MultiBoxLoss":
                layer.multibox_loss_param.mining_type = caffe_pb2.MultiBoxLossParameter.NONE
        protoio.write_prototxt(net, folder / "train.prototxt")
    return Trainer(path, input_fn=synthetic_input({"TRAIN": batches}), log=lambda line: None, progress=False,
                   compiled=compiled, strategy=strategy)


def relative(a, b):
    return float(np.abs(a - b).max()) / max(float(np.abs(a).max()), 1e-3)


def mirrored():
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def weights(bn, steps, size):
    # Both runs use the two-pass BatchNorm form, so that only the distribution differs.
    # No hard-negative mining: which near-tied negatives are mined can flip on float
    # rounding, a discrete change of the loss, not a distribution error.
    normalization.FUSED = False
    batches = synthetic_batches(4, size, 3, steps, seed=11)
    results = {}
    for name, strategy in (("one", None), ("mirrored", mirrored())):
        trainer = make_trainer(bn, size, steps, batches, strategy, mining=False, compiled=False)
        losses = []
        for _ in range(steps):
            loss, _, grads = trainer.iteration()
            trainer.solver.step(grads)
            losses.append(float(loss))
        results[name] = (losses, trainer.store.arrays())
    worst = 0.0
    for layer, arrays in results["one"][1].items():
        for a, b in zip(arrays, results["mirrored"][1][layer]):
            if VERBOSE and relative(a, b) > 1e-4:
                print(layer, a.shape, relative(a, b))
            worst = max(worst, relative(a, b))
    print("losses", results["one"][0], results["mirrored"][0])
    print("worst", worst)


def gradients(bn, size, mining, dtype):
    from caffessd.train.executor import net

    net.PARAM_DTYPE = dtype
    batches = [(images.astype(dtype), gt) for images, gt in synthetic_batches(4, size, 3, 1, seed=11)]
    runs = {}
    for name, fused, strategy in (("one", False, None), ("fused", True, None), ("mirrored", False, mirrored())):
        normalization.FUSED = fused
        trainer = make_trainer(bn, size, 1, batches, strategy, mining=mining, compiled=False)
        loss, outputs, grads = trainer.iteration()
        names = [v.name for v in trainer.trainable]
        # BatchNorm's running sums after the pass (global-batch mean, m/(m-1) with the global m).
        stats = [a for layer, arrays in trainer.store.arrays().items() if "/bn" in layer for a in arrays]
        runs[name] = (float(loss), [np.asarray(g) for g in grads] + stats)
        names += [f"bn statistic {k}" for k in range(len(stats))]
    worst = floor = 0.0
    for name, a, b, c in zip(names, runs["one"][1], runs["fused"][1], runs["mirrored"][1]):
        if VERBOSE:
            print(f"{name:36s} floor {relative(a, b):9.2e} mirrored {relative(a, c):9.2e}")
        floor, worst = max(floor, relative(a, b)), max(worst, relative(a, c))
    print("losses", runs["one"][0], runs["fused"][0], runs["mirrored"][0])
    print("floor", floor)
    print("worst", worst)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "-v"]
    if args[0] == "weights":
        weights(args[1], int(args[2]), int(args[3]) if len(args) > 3 else 64)
    else:
        gradients(args[1], int(args[2]) if len(args) > 2 else 64, mining="nomining" not in args,
                  dtype=np.float64 if "float64" in args else np.float32)
