"""Filters kept in TensorFlow's layout inside the trainer, Caffe's layout at its
edges: --weights in, the snapshot's caffemodel and solverstate out, --resume back in.
The expected layouts are spelled out here as plain numpy transposes (conv2d's
(kh, kw, I, O); depthwise_conv2d's (kh, kw, C, multiplier) with Caffe's output
channel c*m + j reading input channel c), not taken from the code under test."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from caffessd import protoio  # noqa: E402
from caffessd.train import snapshot  # noqa: E402
from caffessd.train.executor.layouts import BlobLayout  # noqa: E402
from caffessd.train.trainer import Trainer  # noqa: E402
from train_helpers import caffemodel_of, small_config, synthetic_batches, synthetic_input, write_solver  # noqa: E402

SIZE, CLASSES = 64, 3


def test_blob_layouts_round_trip_and_match_tensorflows_filter_order():
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(5, 3, 3, 2)).astype(np.float32)            # O, I, kh, kw
    hwio = BlobLayout.transposed(conv.shape, (2, 3, 1, 0))
    assert hwio.stored_shape == (3, 2, 3, 5) and not hwio.is_caffe
    stored = hwio.to_stored(conv)
    for o, i, y, x in [(0, 0, 0, 0), (4, 2, 2, 1), (3, 1, 0, 1)]:
        assert stored[y, x, i, o] == conv[o, i, y, x]
    np.testing.assert_array_equal(hwio.to_caffe(stored), conv)

    depthwise = rng.normal(size=(6, 1, 3, 3)).astype(np.float32)        # C * m, 1, kh, kw with C = 3, m = 2
    hwcm = BlobLayout.transposed(depthwise.shape, (2, 3, 0, 1), grouped=(3, 2, 3, 3))
    stored = hwcm.to_stored(depthwise)
    assert stored.shape == (3, 3, 3, 2)
    for c in range(3):
        for j in range(2):
            np.testing.assert_array_equal(stored[:, :, c, j], depthwise[c * 2 + j, 0])
    np.testing.assert_array_equal(hwcm.to_caffe(stored), depthwise)
    t = tf.constant(stored)
    np.testing.assert_array_equal(hwcm.tf_to_caffe(tf, t).numpy(), depthwise)
    np.testing.assert_array_equal(hwcm.tf_from_caffe(tf, tf.constant(depthwise)).numpy(), stored)
    assert BlobLayout.caffe((4, 2)).is_caffe


def test_weights_snapshots_and_resume_speak_caffes_layout(tmp_path):
    """MobileNetV2-SSDLite (1x1 and depthwise filters): the variables hold TensorFlow's
    layout of the loaded blobs; the snapshot's caffemodel gives back exactly the Caffe
    blobs (after 0 iterations) and its solverstate's RMSProp history is the variables'
    history transposed back; --resume restores both bit for bit."""
    batches = synthetic_batches(2, SIZE, CLASSES, 2, seed=1)
    path = write_solver(tmp_path, small_config("mnv2", "ssdlite", size=SIZE), test_interval=0, type="RMSProp",
                        snapshot=0, snapshot_after_train=False)
    trainer = Trainer(path, input_fn=synthetic_input({"TRAIN": batches}), log=lambda line: None, progress=False,
                      compiled=False)
    rng = np.random.default_rng(3)
    caffe = {name: [rng.normal(0, 0.1, a.shape).astype(np.float32) for a in arrays]
             for name, arrays in trainer.store.arrays().items()}
    protoio.write_caffemodel(caffemodel_of(caffe), tmp_path / "start.caffemodel")
    trainer.load_weights(tmp_path / "start.caffemodel")

    kinds = {"conv": 0, "depthwise": 0}
    for info in trainer.train_net.infos:
        if info.type != "Convolution":
            continue
        blob, variable = caffe[info.name][0], trainer.store.variables[info.name][0].numpy()
        group = info.layer.convolution_param.group or 1
        if group == 1:
            expected, kinds["conv"] = np.transpose(blob, (2, 3, 1, 0)), kinds["conv"] + 1
        else:
            assert group == blob.shape[0] and blob.shape[1] == 1, info.name   # gen-model's depthwise, multiplier 1
            expected, kinds["depthwise"] = np.transpose(blob, (2, 3, 0, 1)), kinds["depthwise"] + 1
        np.testing.assert_array_equal(variable, expected, err_msg=info.name)
    assert kinds["conv"] > 10 and kinds["depthwise"] > 10, kinds

    types = {info.name: info.type for info in trainer.train_net.infos}
    model_path, _ = trainer.write_snapshot()
    saved = protoio.layer_blobs(protoio.read_caffemodel(model_path))
    for name, arrays in caffe.items():
        if types[name] == "BatchNorm":
            continue  # the snapshot recomputes BatchNorm statistics
        for ours, theirs in zip(saved[name], arrays):
            np.testing.assert_array_equal(ours, theirs, err_msg=name)

    for _ in range(2):
        trainer.train_iteration()
    model_path, state_path = trainer.write_snapshot()
    state = snapshot.read_solverstate(state_path)
    checked = 0
    for blob, param, h in zip(state.history, trainer.solver.params, trainer.solver.history):
        array = protoio.blob_to_array(blob)
        shape = trainer.store.caffe_shapes()[param.layer][param.index]
        assert array.shape == shape, param.name
        if len(shape) == 4:
            inverse = (3, 2, 0, 1) if param.layout.order == (2, 3, 1, 0) else (2, 3, 0, 1)
            np.testing.assert_array_equal(array, np.transpose(h.numpy(), inverse).reshape(shape), err_msg=param.name)
            checked += 1
    assert checked == kinds["conv"] + kinds["depthwise"]

    again = Trainer(path, input_fn=synthetic_input({"TRAIN": batches}), log=lambda line: None, progress=False,
                    compiled=False)
    again.resume(state_path)
    for a, b in zip(trainer.solver.history, again.solver.history):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for name, arrays in trainer.store.arrays().items():
        for a, b in zip(arrays, again.store.arrays()[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
