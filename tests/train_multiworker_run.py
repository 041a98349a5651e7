"""Run by test_train_distributed: one process of a MultiWorkerMirroredStrategy
run on localhost (TF_CONFIG from the arguments), or the single-device reference.

    python tests/train_multiworker_run.py OUT one
    python tests/train_multiworker_run.py OUT worker INDEX PORT0,PORT1

Trains the same small generated net (no BatchNorm, no mining, so float32
rounding stays small) for STEPS SGD steps with solve(), as `caffessd train`
would, on the same global batches; the chief's final snapshot lands in OUT/
worker0 (or OUT/one); every process prints whether it wrote one.
"""
import json
import os
import sys
from pathlib import Path

STEPS = 2

out, role = Path(sys.argv[1]), sys.argv[2]
if role == "worker":
    index, ports = int(sys.argv[3]), sys.argv[4].split(",")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})
    folder = out / f"worker{index}"
else:
    os.environ.pop("TF_CONFIG", None)
    folder = out / "one"
folder.mkdir(parents=True, exist_ok=True)

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import small_config, synthetic_batches, synthetic_input, write_solver  # noqa: E402
from caffessd import caffe_pb2, protoio  # noqa: E402
from caffessd.train.devices import training_strategy  # noqa: E402

# The strategy first: it configures the runtime before any op runs.
strategy = training_strategy()

from caffessd.train.executor import normalization  # noqa: E402
from caffessd.train.trainer import Trainer  # noqa: E402

normalization.FUSED = False
size = 64
path = write_solver(folder, small_config(size=size, batch=4, bn="none"), max_iter=STEPS, random_seed=2,
                    test_interval=0, snapshot=0, snapshot_after_train=True, type="SGD", momentum=0.9,
                    base_lr=0.001, display=1)
net = protoio.read_net(folder / "train.prototxt")
for layer in net.layer:
    if layer.type == "MultiBoxLoss":
        layer.multibox_loss_param.mining_type = caffe_pb2.MultiBoxLossParameter.NONE
protoio.write_prototxt(net, folder / "train.prototxt")
lines = []
trainer = Trainer(path, input_fn=synthetic_input({"TRAIN": synthetic_batches(4, size, 3, STEPS, seed=11)}),
                  log=lines.append, progress=False, strategy=strategy, compiled=False)
trainer.solve()
print("replicas", strategy.num_replicas_in_sync if strategy is not None else 1)
print("chief", trainer.chief)
print("log_lines", len(lines))
print("snapshot", trainer.last_snapshot)
