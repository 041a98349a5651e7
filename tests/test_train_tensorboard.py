"""TensorBoard event files of a training run, read back with TensorBoard's own reader
(tensorboard.backend.event_processing): the scalars equal what the trainer logged at
the same iterations, the loss's loc/conf terms add up to the loss, and the test images
show the ground truth and the predicted boxes."""
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

from tensorboard.util import tensor_util  # noqa: E402

from caffessd.image.draw import PALETTE  # noqa: E402
from caffessd.train import summaries  # noqa: E402
from caffessd.train.trainer import Trainer  # noqa: E402
from train_helpers import small_config, synthetic_batches, synthetic_input, write_solver  # noqa: E402

SIZE, CLASSES = 64, 3


def read_events(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    values = {}
    for tag in acc.Tags()["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        values[tag] = (plugin, {e.step: tensor_util.make_ndarray(e.tensor_proto) for e in acc.Tensors(tag)})
    return values


def logged(lines, pattern):
    """{iteration: value} of the log lines matching `pattern` (a full line with one number
    group); a line without its own iteration belongs to the last 'Iteration N, ...' line."""
    found, iteration = {}, None
    for line in lines:
        head = re.match(r"Iteration (\d+), ", line)
        if head:
            iteration = int(head.group(1))
        match = re.fullmatch(pattern, line.strip())
        if match:
            found[iteration] = float(match.group(1))
    return found


NUMBER = r"([-\d.e+]+)"
LOG_LINES = {"loss/smoothed": rf"Iteration \d+, loss = {NUMBER}",
             "loss/mbox_loss": rf"Train net output #0: mbox_loss = {NUMBER}",
             "learning_rate": rf"Iteration \d+, lr = {NUMBER}",
             "test/detection_eval": rf"Test net output #0: detection_eval = {NUMBER}"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("board")
    train = synthetic_batches(2, SIZE, CLASSES, 3, seed=4)
    test = synthetic_batches(2, SIZE, CLASSES, 3, seed=5)
    path = write_solver(folder, small_config(size=SIZE), max_iter=4, display=1, test_interval=2, test_iter=[3],
                        test_initialization=True, snapshot=0, average_loss=2, base_lr=0.01)
    lines = []
    trainer = Trainer(path, input_fn=synthetic_input({"TRAIN": train, "TEST": test}), log=lines.append,
                      progress=False, compiled=False)
    threshold, summaries.SCORE_THRESHOLD = summaries.SCORE_THRESHOLD, 1.01  # ground truth only in the pictures
    try:
        trainer.solve()
    finally:
        summaries.SCORE_THRESHOLD = threshold
    return trainer, lines, read_events(trainer.tensorboard_dir), test


def test_event_files_default_beside_the_snapshots(run):
    trainer, _, events, _ = run
    assert trainer.tensorboard_dir == trainer.solver_path.parent / "snap" / "net_tensorboard"
    assert list(trainer.tensorboard_dir.glob("events.out.tfevents.*"))
    assert {tag: plugin for tag, (plugin, _) in events.items()} == {
        "loss/smoothed": "scalars", "loss/mbox_loss": "scalars", "loss/loc": "scalars", "loss/conf": "scalars",
        "learning_rate": "scalars", "test/detection_eval": "scalars", "test/detections": "images"}


def test_scalars_equal_the_logged_values(run):
    """Every iteration's smoothed loss, net output and rate, and each test's mAP, as the log
    prints them (6 significant digits, hence rtol 1e-5)."""
    _, lines, events, _ = run
    for tag, pattern in LOG_LINES.items():
        expected = logged(lines, pattern)
        assert len(expected) >= 3, tag
        written = {step: float(v) for step, v in events[tag][1].items()}
        assert sorted(written) == sorted(expected), tag
        for step, value in expected.items():
            assert written[step] == pytest.approx(value, rel=1e-5, abs=1e-12), (tag, step)
    assert sorted(events["test/detection_eval"][1]) == [0, 2, 4]
    # average_loss 2: the smoothed loss is not the raw one after the first iteration
    assert any(events["loss/smoothed"][1][s] != events["loss/mbox_loss"][1][s] for s in (1, 2, 3))


def test_loss_terms_add_up_to_the_loss(run):
    _, _, events, _ = run
    for step, total in events["loss/mbox_loss"][1].items():
        loc, conf = float(events["loss/loc"][1][step]), float(events["loss/conf"][1][step])
        assert loc > 0 and conf > 0
        assert loc + conf == pytest.approx(float(total), rel=1e-5)


def test_test_images_show_the_ground_truth(run):
    """Each test writes the first TEST_IMAGES test images as PNGs (the pipeline's images with its
    mean and scale undone), the ground truth outlined in white (no detection drawn in this run)."""
    from caffessd.train.data import parse_layer
    from caffessd.train.show import blob_to_image

    trainer, _, events, test = run
    transform = parse_layer(trainer.test_nets[0].data_layers[0].layer, "TEST").transform
    images = events["test/detections"][1]
    assert sorted(images) == [0, 2, 4]
    for step, value in images.items():
        width, height, *pngs = value
        assert (int(width), int(height)) == (SIZE, SIZE) and len(pngs) == summaries.TEST_IMAGES
        for k, png in enumerate(pngs):
            picture = tf.io.decode_png(png).numpy()
            images_k, gt_k = test[k // 2][0][k % 2], test[k // 2][1][test[k // 2][1][:, 0] == k % 2]  # batches of 2
            raw = blob_to_image(images_k, transform.mean, transform.scale)[:, :, ::-1]
            changed = np.any(picture != raw, axis=2)
            assert changed.any() and np.all(picture[changed] == 255), (step, k)
            x0, y0, x1, y1 = gt_k[0, 3:7] * SIZE
            rows = slice(int(np.ceil(y0)) + 1, int(y1) - 1)
            edge = [x for x in range(max(0, int(x0) - 1), min(SIZE, int(x0) + 2)) if np.all(picture[rows, x] == 255)]
            assert edge, (step, k)  # the left edge of its first box, within a pixel


def test_detection_picture_draws_confident_boxes_only():
    """A confident detection is drawn in its class colour, one below SCORE_THRESHOLD is not;
    inverted or out-of-image boxes (an untrained net's) are ordered and clipped."""
    blob = np.zeros((3, 40, 40), np.float32)
    rows = np.array([[0, 2, 0.9, 0.6, 0.6, 0.2, 0.2],      # inverted corners
                     [0, 1, 0.1, 0.0, 0.0, 1.0, 1.0],      # below the threshold
                     [0, 1, 0.8, -3.0, 0.5, np.inf, 0.7]], np.float32)  # not finite: left out
    picture = summaries.detection_picture(summaries.TestSample(blob, rows, np.zeros((0, 8), np.float32)),
                                          (0.0, 0.0, 0.0), 1.0, {2: "square"})
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert tuple(PALETTE[2]) in colours and tuple(PALETTE[1]) not in colours
    assert (picture[8, 8:24] == PALETTE[2]).all()  # the top edge of the box at 0.2 * 40


def test_missing_tensorboard_is_one_line_before_training(tmp_path, monkeypatch):
    """TensorFlow >= 2.20 installs no TensorBoard, and tf.summary then raises at the
    first scalar: the trainer says so before its first iteration, naming the way out."""
    import sys

    from caffessd.errors import CaffessdError

    path = write_solver(tmp_path, small_config(size=SIZE), max_iter=2, display=1, snapshot=0, base_lr=0.01)
    batches = synthetic_batches(1, SIZE, CLASSES, 3, seed=4)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard: ModuleNotFoundError
    trainer = Trainer(path, input_fn=synthetic_input({"TRAIN": batches}), log=lambda line: None,
                      progress=False, compiled=False)
    with pytest.raises(CaffessdError, match=r"'tensorboard' package.*caffessd\[tf\].*--no-tensorboard"):
        trainer.solve()
    assert trainer.solver.iter == 0 and not trainer.tensorboard_dir.exists()
    trainer.tensorboard = False
    trainer.solve()
    assert trainer.solver.iter == 2
