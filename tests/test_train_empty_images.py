"""Images without objects in training: the fork's default, and pure negatives
on request (train --empty-image-negatives N).

By default (as MultiBoxLoss mines in proportion to an image's positives) an
image without ground truth adds nothing: the loss does not change whatever
the net predicts on it. With N > 0 it gives its N priors of highest
background loss as negatives, and the loss grows by exactly their softmax
losses over the batch's matches (VALID normalisation), checked against a
direct numpy computation to 1e-5. Images whose only boxes are difficult ones
that use_difficult_gt: false leaves out are not taken for empty. End to end,
`caffessd train --empty-image-negatives` on batches of empty images trains on
a non-zero loss where the default's is 0."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from caffessd import caffe_pb2  # noqa: E402
from caffessd.train import multibox  # noqa: E402
from caffessd.train.loss import multibox_loss  # noqa: E402

CT = caffe_pb2.PriorBoxParameter


def grid_priors(n=5, sizes=(0.2, 0.4)):
    boxes = [[(x + 0.5) / n - s / 2, (y + 0.5) / n - s / 2, (x + 0.5) / n + s / 2, (y + 0.5) / n + s / 2]
             for y in range(n) for x in range(n) for s in sizes]
    boxes = np.asarray(boxes, np.float32)
    var = np.tile(np.asarray([0.1, 0.1, 0.2, 0.2], np.float32), (len(boxes), 1))
    return np.stack([boxes.reshape(-1), var.reshape(-1)]).reshape(1, 2, -1)


def batch(seed=0):
    """Image 0 has two boxes, image 1 none, image 2 only a difficult one."""
    rng = np.random.default_rng(seed)
    priors = grid_priors()
    count = priors.shape[2] // 4
    loc = rng.normal(0, 0.5, (3, count, 4)).astype(np.float32)
    conf = rng.normal(0, 2, (3, count, 4)).astype(np.float32)
    gt = np.asarray([[0, 1, 0, 0.1, 0.1, 0.4, 0.5, 0], [0, 2, 0, 0.5, 0.5, 0.9, 0.8, 0],
                     [2, 3, 0, 0.2, 0.2, 0.6, 0.6, 1]], np.float32)
    return loc, conf, priors, gt


def loss_value(loc, conf, priors, gt, settings):
    value, matches, _ = multibox_loss(tf.constant(loc.reshape(3, -1)), tf.constant(conf.reshape(3, -1)),
                                      tf.constant(priors), tf.constant(gt), settings)
    return float(value), int(matches)


def settings(negatives=0, **kw):
    return multibox.Settings(num_classes=4, code_type=CT.CENTER_SIZE, use_difficult_gt=False,
                             empty_image_negatives=negatives, **kw)


def background_losses(conf):
    shifted = conf - conf.max(axis=1, keepdims=True)
    return -(shifted[:, 0] - np.log(np.exp(shifted).sum(axis=1)))


def test_default_ignores_images_without_objects():
    loc, conf, priors, gt = batch()
    targets = multibox.find_targets(loc, conf, priors, gt, settings())
    assert not (targets.negatives[:, 0] == 1).any() and not (targets.negatives[:, 0] == 2).any()
    before, _ = loss_value(loc, conf, priors, gt, settings())
    changed = conf.copy()
    changed[1] = np.random.default_rng(9).normal(0, 5, changed[1].shape)
    after, _ = loss_value(loc, changed, priors, gt, settings())
    assert after == before


def test_pure_negatives_add_their_hardest_priors_to_the_loss():
    loc, conf, priors, gt = batch()
    n = 7
    targets = multibox.find_targets(loc, conf, priors, gt, settings(n))
    mine = targets.negatives[targets.negatives[:, 0] == 1, 1]
    losses = background_losses(conf[1].astype(np.float64))
    expected = np.argsort(-losses, kind="stable")[:n]
    assert sorted(mine.tolist()) == sorted(expected.tolist())
    assert not (targets.negatives[:, 0] == 2).any()          # only a difficult box, left out: not "empty"
    base, matches = loss_value(loc, conf, priors, gt, settings())
    with_negatives, same_matches = loss_value(loc, conf, priors, gt, settings(n))
    assert same_matches == matches > 0
    assert with_negatives - base == pytest.approx(losses[expected].sum() / matches, rel=1e-5)


def test_mining_none_already_counts_every_prior():
    loc, conf, priors, gt = batch()
    none = multibox.P.NONE
    assert loss_value(loc, conf, priors, gt, settings(7, mining_type=none)) == \
        loss_value(loc, conf, priors, gt, settings(0, mining_type=none))


def empty_lmdb_solver(tmp_path):
    """An LMDB of four images without objects and a gen-model solver training on it."""
    from caffessd.datasets import open_dataset
    from caffessd.datasets.lmdb_writer import ConvertOptions, make_lmdb
    from caffessd.generators import SSDConfig, generate
    from dataset_builders import voc_xml, write_image

    root = tmp_path / "voc"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    for i in range(4):
        write_image(root / "JPEGImages" / f"{i}.jpg", 48, 48, seed=i)
        (root / "Annotations" / f"{i}.xml").write_text(voc_xml(48, 48, []))
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("0\n1\n2\n3\n")
    make_lmdb(open_dataset(root, "voc", "trainval"), tmp_path / "db", {"a": 1}, ConvertOptions(), progress=False)
    config = SSDConfig(input_width=48, input_height=48, num_classes=2, width=0.25, batch_size=2, max_iter=1,
                       lmdb_train=str(tmp_path / "db"), lmdb_test=str(tmp_path / "db"), snapshot=0)
    generate(config, tmp_path / "model", ["train", "test"])
    return tmp_path / "model" / "solver_train.prototxt"


def test_trainer_option_reaches_the_loss(tmp_path):
    """One iteration on images without objects: loss 0 by default, above 0 with the option."""
    from caffessd import protoio
    from caffessd.train.datacheck import train_data_lines
    from caffessd.train.trainer import Trainer

    solver = empty_lmdb_solver(tmp_path)
    data = next(layer for layer in protoio.read_net(solver.parent / "train.prototxt").layer
                if layer.type == "AnnotatedData")
    lines = train_data_lines(data)     # what train prints first (before the pipeline opens the LMDB)
    assert lines[0] == "dataset check: 4 images, 0 objects, 0 classes; 0 errors, 0 warnings"
    assert lines[1].startswith("  images without objects: 4")
    trainer = Trainer(solver, progress=False, compiled=False, log=lambda line: None, empty_image_negatives=20)
    assert trainer.train_net.options["empty_image_negatives"] == 20
    losses = {}
    for negatives in (0, 20):   # iteration() computes loss and gradients without updating the weights
        trainer.train_net.options["empty_image_negatives"] = negatives
        losses[negatives], _, _ = trainer.iteration()
    assert losses[0] == 0.0 and losses[20] > 0.5, losses


def test_train_command_passes_the_option(tmp_path, capsys, monkeypatch):
    from caffessd.commands import train_cmd
    from conftest import run_in_process

    seen = {}

    class Recorder:
        def __init__(self, solver, **options):
            seen.update(options)
            raise SystemExit(0)

    monkeypatch.setattr(train_cmd, "Trainer", Recorder)
    solver = empty_lmdb_solver(tmp_path)
    code, err, _ = run_in_process(["train", solver, "--empty-image-negatives", "12", "--no-progress"], capsys)
    assert code == 0 and seen["empty_image_negatives"] == 12, err
