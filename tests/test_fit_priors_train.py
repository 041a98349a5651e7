"""fit-priors against the train package, on the same boxes: the priors it
computes equal the train executor's mbox_priorbox blob (TensorFlow), its
ground truth read from a VOC folder equals the rows the trainer reads from
the LMDB make-lmdb writes of that folder, and per object the priors matched,
whether one reaches overlap_threshold and which layers serve it equal what
MultiBoxLoss's own find_targets decides (caffessd.train.multibox)."""
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from caffessd import protoio  # noqa: E402
from caffessd.analysis.fit import fit_priors  # noqa: E402
from caffessd.boxmatch import jaccard  # noqa: E402
from caffessd.datasets import open_dataset  # noqa: E402
from caffessd.datasets.labelmap import labelmap_from_dataset, name_to_label  # noqa: E402
from caffessd.datasets.lmdb_writer import ConvertOptions, make_lmdb  # noqa: E402
from caffessd.datasets.synthetic import SHAPES, write_shapes_voc  # noqa: E402
from caffessd.generators import SSDConfig, generate  # noqa: E402
from caffessd.train import multibox  # noqa: E402
from caffessd.train.data import LmdbRecords  # noqa: E402
from caffessd.train.executor import ParamStore, TFNet, initial_weights  # noqa: E402


def trainer_priors(param, size):
    net = TFNet(param, "TRAIN", ParamStore(), initial=initial_weights(param))
    import tensorflow as tf

    feeds = {"data": tf.zeros((1, 3, size, size)), "label": tf.fill((1, 8), -1.0)}
    ctx = net.forward(feeds, stop_after="mbox_priorbox")
    return np.asarray(ctx.get("mbox_priorbox"))


def test_matching_equals_multibox_loss_on_the_same_boxes(tmp_path):
    data = write_shapes_voc(tmp_path / "shapes", {"trainval": 24}, size=96, seed=4, max_objects=4, scale=(0.08, 0.6))
    generate(SSDConfig(input_width=96, input_height=96, num_classes=4, width=0.25), tmp_path / "model", ["train"])
    net_path = tmp_path / "model" / "train.prototxt"
    result = fit_priors(net_path, open_dataset(data, "voc", "trainval"), progress=False)
    param = protoio.read_net(net_path)
    blob = trainer_priors(param, 96)
    np.testing.assert_allclose(result.priors.boxes, blob.reshape(2, -1, 4)[0], atol=1e-6)

    label_of = name_to_label(labelmap_from_dataset(type("C", (), {"classes": SHAPES})()), None)
    make_lmdb(open_dataset(data, "voc", "trainval"), tmp_path / "db", label_of, ConvertOptions(), progress=False)
    records = LmdbRecords(tmp_path / "db")
    rows = []
    for i in range(len(records)):
        _, _, _, boxes, extra = records.parse(i)
        rows += [[i, e[0], e[1], *b, e[2]] for b, e in zip(boxes, extra)]
    gt = np.asarray(rows, np.float32)
    loss = next(layer for layer in param.layer if layer.type == "MultiBoxLoss")
    settings = multibox.Settings.from_layer(loss)
    count = len(result.priors.boxes)
    targets = multibox.find_targets(np.zeros((len(records), count, 4), np.float32),
                                    np.zeros((len(records), count, settings.num_classes), np.float32), blob, gt, settings)

    truth, cover = result.truth, result.coverage
    image, boxes, _ = truth.arrays()
    layer_of = result.priors.layer_of_prior
    compared = 0
    for i in range(len(records)):
        mine = np.flatnonzero(image == i)
        theirs = targets.gt_boxes.get(i, np.zeros((0, 5), np.float32))
        assert len(mine) == len(theirs)
        indices = targets.match_indices[i]
        iou = jaccard(blob.reshape(2, -1, 4)[0], theirs[:, 1:5]) if len(theirs) else None
        for j, box in enumerate(theirs[:, 1:5]):
            (row,) = [r for r in mine if np.array_equal(boxes[r], box)]   # the LMDB groups boxes by label
            owner = indices == j
            assert cover.matched_priors[row] == owner.sum()
            assert cover.strong[row] == bool((owner & (iou[:, j] >= settings.overlap_threshold)).any())
            assert cover.served[row].tolist() == [bool(owner[layer_of == k].any()) for k in range(len(result.priors.layers))]
            compared += 1
    assert compared == len(truth) > 40
    assert 0 < cover.matched < compared   # the small shapes leave some objects below the threshold
