"""Fine-tuning across class counts, as docs/train.md tells a user to do it.

- The published path, TF COCO checkpoint -> convert-tf -> gen-model for new classes ->
  `train --weights --skip-mismatched`, with the commands of docs/train.md run in this
  process on a checkpoint with the model zoo's ssd_mobilenet_v1 variable names (random
  weights, width 0.25, 160x160, 90 classes) into a 3-class net: without the option the
  CLI prints one error line naming the first class head and the option; with it exactly
  the six *_mbox_conf layers keep their fillers (listed one per line with both shapes),
  every other layer of the train net gets the converted blobs, and both nets' PriorBox
  layers give the same priors (within 1e-4 of the image size).
- Learning: scripts/finetune_shapes.py small, where fine-tuning beats training from scratch
  at equal iterations on held-out mAP.
"""
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from caffessd import caffe_pb2, protoio  # noqa: E402
from caffessd.priorbox import prior_boxes  # noqa: E402
from caffessd.train.trainer import Trainer  # noqa: E402
from conftest import run_in_process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def documented_commands():
    """The three commands of docs/train.md's TF COCO example, as argument lists."""
    text = (ROOT / "docs" / "train.md").read_text()
    block = text[text.index("**From a TF COCO checkpoint"):]
    block = block[block.index("```bash"):]
    block = block[:block.index("```", 7)]
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("caffessd ")]


def replaced(args, values):
    """args with the values of the given options replaced (options absent are appended)."""
    out, skip = [], False
    for k, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg in values:
            out += [arg, str(values.pop(arg))] if values.get(arg) is not None else []
            skip = True
            continue
        out.append(arg)
    for key, value in values.items():
        out += [key, str(value)] if value is not None else []
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    import tf_ssd_reference as reference

    work = tmp_path_factory.mktemp("coco")
    model = reference.build("ssd_mobilenet_v1", num_classes=90, height=160, width=160, mult=0.25, seed=3)
    prefix = reference.save_checkpoint(model, work / "model.ckpt")
    return work, prefix


def test_documented_coco_path_fine_tunes_a_converted_checkpoint(converted, capsys):
    work, prefix = converted
    convert, generate, train = documented_commands()
    assert convert[0] == "convert-tf" and generate[0] == "gen-model" and train[0] == "train"
    assert "--skip-mismatched" in train
    code, err, _ = run_in_process(["convert-tf", prefix, "--input", "160", "-o", work / "coco"], capsys)
    assert code == 0, err
    generate = replaced(generate, {"--input": 160, "--labelmap": None, "--lmdb-train": None, "--lmdb-test": None,
                                   "-o": work / "mine", "--width": 0.25, "--classes": 3})
    code, err, _ = run_in_process(generate, capsys)
    assert code == 0, err
    solver_path = work / "mine" / "solver_train.prototxt"
    solver = protoio.read_prototxt(solver_path, caffe_pb2.SolverParameter)
    solver.max_iter, solver.test_interval = 0, 0  # load, list, stop: no data needed
    protoio.write_prototxt(solver, solver_path)
    weights = work / "coco" / "deploy.caffemodel"

    code, err, _ = run_in_process(["train", solver_path, "--weights", weights, "--no-progress",
                                   "--no-tensorboard"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert re.fullmatch(rf"caffessd: error: {re.escape(str(weights))}: layer '\w+_mbox_conf' blob 0 has shape "
                        r"\(\d+, \d+, 1, 1\), the net needs \(\d+, \d+, 1, 1\); --skip-mismatched .*", lines[0])

    code, err, _ = run_in_process(["train", solver_path, "--weights", weights, "--skip-mismatched",
                                   "--no-progress", "--no-tensorboard"], capsys)
    assert code == 0, err
    listed = re.findall(r"^  (\S+): file \((\d+), (\d+), 1, 1\), \(\d+,\), net \((\d+), \d+, 1, 1\), \(\d+,\)$",
                        err, re.M)
    assert len(listed) == 6 and all(name.endswith("_mbox_conf") for name, *_ in listed), err
    for name, file_out, _, net_out in listed:  # priors x 91 classes in the file, priors x 3 in the net
        assert int(file_out) // 91 == int(net_out) // 3
    assert "missing from the file" not in err

    trainer = Trainer(solver_path, progress=False, log=lambda line: None, tensorboard=False, compiled=False)
    loaded = trainer.load_weights(weights, skip_mismatched=True)
    assert not loaded.missing and len(loaded.skipped) == 6
    stored = protoio.layer_blobs(protoio.read_caffemodel(weights))
    ours_by_layer = trainer.store.arrays()
    for name in loaded.loaded:
        for ours, theirs in zip(ours_by_layer[name], stored[name]):
            np.testing.assert_array_equal(ours, theirs.reshape(ours.shape), err_msg=name)
    deploy = {layer.name: layer for layer in protoio.read_net(work / "coco" / "deploy.prototxt").layer}
    priors = [info for info in trainer.train_net.infos if info.type == "PriorBox"]
    assert len(priors) == sum(1 for layer in deploy.values() if layer.type == "PriorBox") == 7  # 2 on the lowest map
    for info in priors:
        feature, image = info.input_shapes[0][2:4], info.input_shapes[1][2:4]
        ours = prior_boxes(info.layer.prior_box_param, feature, image)
        theirs = prior_boxes(deploy[info.name].prior_box_param, feature, image)
        # gen-model derives the interpolated square's size from the scales, convert-tf from TF's
        # anchors: they differ by float rounding (measured 1.6e-5 of the image, 0.003 px here).
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4, err_msg=info.name)


def load_recipe():
    spec = importlib.util.spec_from_file_location("finetune_shapes", ROOT / "scripts" / "finetune_shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["finetune_shapes"] = module
    spec.loader.exec_module(module)
    return module


def test_fine_tuned_net_beats_training_from_scratch(tmp_path):
    """scripts/finetune_shapes.py small, every step a `caffessd` command: a MobileNet-SSD (width
    0.5, 64x64) trained 300 iterations on circles/squares/triangles (400 images), then 100
    iterations on crosses and diamonds (300 images, another class count) from gen-model's
    fillers and from the first net with --skip-mismatched; held-out mAP on 60 B images. Both
    datasets give each class its own colour (colour_hint), so that so few iterations learn
    something. Measured: scratch 0.041, fine-tuned 0.250. The test asks for the fine-tuned net
    to be ahead by at least 0.1 and at least twice the scratch mAP."""
    recipe = load_recipe()
    args = recipe.parse_args(["--workdir", str(tmp_path), "--colour-hint", "--input", "64",
                              "--pretrain-images", "400", "--pretrain-iterations", "300", "--train-images", "300",
                              "--iterations", "100", "--test-interval", "100", "--test-images", "60"])
    result = recipe.workflow(args)
    assert len(result["skipped"]) == 6 and all("_mbox_conf: file (" in line for line in result["skipped"])
    scratch = result["runs"]["scratch"]["maps"][-1]
    tuned = result["runs"]["finetuned"]["maps"][-1]
    assert scratch[0] == tuned[0] == 100
    assert tuned[1] >= scratch[1] + 0.1 and tuned[1] >= 2 * scratch[1], (scratch, tuned)
    assert result["plot"].read_bytes()[:4] == b"\x89PNG"
