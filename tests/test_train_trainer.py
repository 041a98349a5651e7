"""The training loop: iter_size accumulation, snapshots and --resume, weights by
layer name, failing loudly, test-time mAP and curves. Small generated nets
(width 0.25, 64x64 input) fed by synthetic batches through an input function
with the AnnotatedData pipeline's signature."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from caffessd import caffe_pb2, protoio  # noqa: E402
from caffessd.errors import FormatError  # noqa: E402
from caffessd.train.trainer import NonFiniteLoss, Trainer  # noqa: E402
from train_helpers import small_config, synthetic_batches, synthetic_input, write_solver  # noqa: E402

SIZE, CLASSES = 64, 3


def no_log(line):
    pass


def with_normalization(path, mode):
    """Set the MultiBoxLoss normalization of the solver's train net."""
    train_path = path.parent / "train.prototxt"
    net = protoio.read_net(train_path)
    for layer in net.layer:
        if layer.type == "MultiBoxLoss":
            layer.loss_param.normalization = mode
    protoio.write_prototxt(net, train_path)


def test_iter_size_k_with_batch_b_equals_batch_k_times_b(tmp_path):
    """BATCH_SIZE normalisation (each pass divides by its batch) and no BatchNorm:
    two passes of 2 images then one update == one pass of 4 images."""
    big = synthetic_batches(4, SIZE, CLASSES, 1, seed=1)[0]
    halves = [(big[0][:2], big[1][big[1][:, 0] < 2]),
              (big[0][2:], np.concatenate([big[1][big[1][:, 0] >= 2][:, :1] - 2, big[1][big[1][:, 0] >= 2][:, 1:]], 1))]
    weights = {}
    for name, batch, iter_size, batches in (("k", 2, 2, halves), ("one", 4, 1, [big])):
        folder = tmp_path / name
        folder.mkdir()
        path = write_solver(folder, small_config(batch=batch, bn="none", size=SIZE), iter_size=iter_size,
                            type="SGD", momentum=0.9, base_lr=0.01, lr_policy="fixed", max_iter=2,
                            random_seed=3, snapshot=0, snapshot_after_train=False, test_interval=0)
        with_normalization(path, caffe_pb2.LossParameter.BATCH_SIZE)
        trainer = Trainer(path, input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False, compiled=False)
        trainer.solve()
        weights[name] = trainer.store.arrays()
    for layer, arrays in weights["one"].items():
        for a, b in zip(arrays, weights["k"][layer]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=layer)


def losses_of(trainer, iterations):
    seen = []
    for _ in range(iterations):
        loss, _, grads = trainer.iteration()
        trainer.solver.step(grads)
        seen.append(loss)
    return seen


def test_snapshot_resume_gives_the_same_next_losses_and_loads_in_deploy(tmp_path):
    batches = synthetic_batches(2, SIZE, CLASSES, 2, seed=2)
    path = write_solver(tmp_path, small_config(size=SIZE), max_iter=4, snapshot=2, random_seed=5,
                        test_interval=0, base_lr=0.01)
    make = lambda: Trainer(path, input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False, compiled=False)  # noqa: E731
    straight = make()
    first = losses_of(straight, 2)
    model_path, state_path = straight.write_snapshot()
    rest = losses_of(straight, 2)

    resumed = make()
    resumed.resume(state_path)
    assert resumed.solver.iter == 2
    np.testing.assert_allclose(losses_of(resumed, 2), rest, rtol=1e-5)
    assert first[0] != rest[0]

    state = caffe_pb2.SolverState()
    state.ParseFromString(state_path.read_bytes())
    assert state.iter == 2 and len(state.history) == len(straight.store.params)

    # the snapshot loads by name into the deploy net (BatchNorm factor > 0 after training) and folds
    from caffessd.merge_bn import fold_batchnorm
    from caffessd.net import Net

    deploy = Net.load(tmp_path / "deploy.prototxt", model_path, strict=True)
    factors = [w[2][0] for name, w in deploy.weights.items() if name.endswith("/bn")]
    assert factors and min(factors) > 0
    assert fold_batchnorm(deploy).folded


def test_weights_by_layer_name_list_missing_and_name_a_mismatch(tmp_path):
    batches = synthetic_batches(2, SIZE, CLASSES, 1)
    path = write_solver(tmp_path, small_config(size=SIZE), test_interval=0)
    trainer = Trainer(path, input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False, compiled=False)
    model = caffe_pb2.NetParameter()
    conv = trainer.store.arrays()["conv0"][0]   # Caffe's layout, as a caffemodel holds it
    layer = model.layer.add(name="conv0")
    protoio.array_to_blob(np.full_like(conv, 0.5), layer.blobs.add())
    protoio.write_caffemodel(model, tmp_path / "part.caffemodel")
    loaded = trainer.load_weights(tmp_path / "part.caffemodel")
    assert loaded.loaded == ["conv0"] and "conv1/dw" in loaded.missing and not loaded.skipped
    assert float(trainer.store.arrays()["conv0"][0].mean()) == 0.5
    protoio.array_to_blob(np.zeros((3, 3), np.float32), model.layer[0].blobs[0])
    protoio.write_caffemodel(model, tmp_path / "bad.caffemodel")
    with pytest.raises(FormatError, match=r"layer 'conv0' blob 0 has shape \(3, 3\).*--skip-mismatched"):
        trainer.load_weights(tmp_path / "bad.caffemodel")
    loaded = trainer.load_weights(tmp_path / "bad.caffemodel", skip_mismatched=True)
    assert [m.layer for m in loaded.skipped] == ["conv0"] and loaded.loaded == []
    assert loaded.skipped[0].describe() == f"conv0: file (3, 3), net {tuple(conv.shape)}"
    assert float(trainer.store.arrays()["conv0"][0].mean()) == 0.5  # untouched


def test_weights_for_another_class_count_keep_the_class_heads_fillers(tmp_path):
    """Fine-tuning across class counts: a 3-class net's weights into a 5-class net (num_classes,
    background included) of the same architecture. Without skip_mismatched the first class head is an error naming the option;
    with it exactly the mbox_conf convolutions keep the new net's fillers and every other
    layer gets the file's blobs."""
    from caffessd.train.snapshot import net_model

    source_dir, target_dir = tmp_path / "three", tmp_path / "five"
    source_dir.mkdir()
    target_dir.mkdir()
    batches = synthetic_batches(2, SIZE, 3, 1)
    source = Trainer(write_solver(source_dir, small_config(size=SIZE, classes=3), test_interval=0),
                     input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False, compiled=False)
    target = Trainer(write_solver(target_dir, small_config(size=SIZE, classes=5), test_interval=0, random_seed=9),
                     input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False, compiled=False)
    weights = source.store.arrays()
    protoio.write_caffemodel(net_model(source.train_param, weights), tmp_path / "three.caffemodel")
    fillers = target.store.arrays()
    with pytest.raises(FormatError, match=r"mbox_conf' blob 0 has shape .*--skip-mismatched"):
        target.load_weights(tmp_path / "three.caffemodel")
    loaded = target.load_weights(tmp_path / "three.caffemodel", skip_mismatched=True)
    heads = sorted(name for name in weights if name.endswith("mbox_conf"))
    assert heads and sorted(m.layer for m in loaded.skipped) == heads and not loaded.missing
    for mismatch in loaded.skipped:
        assert mismatch.file_shapes[0][0] // 3 == mismatch.net_shapes[0][0] // 5  # priors x 3 vs x 5 classes
    after = target.store.arrays()
    for name, arrays in after.items():
        expected = fillers[name] if name in heads else weights[name]
        for a, b in zip(arrays, expected):
            np.testing.assert_array_equal(a, b, err_msg=name)
    lines = loaded.summary()
    assert lines[0].startswith(f"{len(heads)} layer(s) with other blob shapes keep their fillers")
    assert len(lines) == 1 + len(heads) and all("file (" in line and "net (" in line for line in lines[1:])


def test_non_finite_loss_names_iteration_and_first_layer(tmp_path):
    images, gt = synthetic_batches(2, SIZE, CLASSES, 1)[0]
    images[0, 0, 3, 3] = np.nan
    path = write_solver(tmp_path, small_config(size=SIZE), test_interval=0, max_iter=3)
    trainer = Trainer(path, input_fn=synthetic_input({"TRAIN": [(images, gt)]}), log=no_log, progress=False, compiled=False)
    with pytest.raises(NonFiniteLoss, match=r"iteration 0: .*layer 'conv0' \(Convolution\).*learning rate"):
        trainer.solve()


def test_ground_truth_matching_no_prior_is_reported_at_the_first_iteration(tmp_path):
    batches = synthetic_batches(2, SIZE, CLASSES, 1)
    batches[0][1][:, 3:7] *= SIZE  # pixel coordinates where normalised ones belong: no overlap with any prior
    batches[0][1][:, 3:5] += 2
    path = write_solver(tmp_path, small_config(size=SIZE), test_interval=0, max_iter=1)
    lines = []
    trainer = Trainer(path, input_fn=synthetic_input({"TRAIN": batches}), log=lines.append, progress=False,
                      compiled=False)
    trainer.solve()
    warning = [line for line in lines if "matches a prior" in line]
    assert len(warning) == 1 and "iteration 1" in warning[0] and "priors" in warning[0]


def test_log_lines_test_map_and_curves(tmp_path):
    train = synthetic_batches(2, SIZE, CLASSES, 2, seed=4)
    test = synthetic_batches(2, SIZE, CLASSES, 2, seed=5)
    path = write_solver(tmp_path, small_config(size=SIZE), max_iter=2, display=1, test_interval=2, test_iter=[2],
                        test_initialization=False, snapshot=0)
    lines = []
    trainer = Trainer(path, input_fn=synthetic_input({"TRAIN": train, "TEST": test}), log=lines.append, progress=False,
                      compiled=False)
    trainer.solve()
    text = "\n".join(lines)
    assert "Iteration 0, loss = " in text and "Iteration 1, lr = " in text
    assert "Train net output #0: mbox_loss = " in text
    assert "Test net output #0: detection_eval = " in text
    assert 0.0 <= trainer.history["map"][0] <= 1.0
    assert (tmp_path / "snap" / "net_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "snap" / "net_iter_2.caffemodel").exists()


TINY_NET = """
name: "tiny"
layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: TRAIN }
        transform_param { resize_param { height: 32 width: 32 } } data_param { batch_size: 2 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 bias_term: false kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "msra" } } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "conv1/scale" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true filler { value: 1 } } }
layer { name: "conv1/relu" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "dw" type: "Convolution" bottom: "conv1" top: "dw"
        convolution_param { num_output: 8 group: 8 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "msra" } } }
layer { name: "loc" type: "Convolution" bottom: "dw" top: "loc" param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 12 kernel_size: 1 weight_filler { type: "msra" } } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "dw" top: "conf"
        convolution_param { num_output: 9 kernel_size: 1 weight_filler { type: "msra" } } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" }
layer { name: "prior" type: "PriorBox" bottom: "dw" bottom: "data" top: "prior"
        prior_box_param { min_size: 10 max_size: 20 aspect_ratio: 2 flip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "loss" type: "MultiBoxLoss" bottom: "loc_flat" bottom: "conf_flat" bottom: "prior" bottom: "label" top: "loss"
        multibox_loss_param { num_classes: 3 code_type: CENTER_SIZE } }
"""


def test_compiled_and_eager_steps_agree(tmp_path):
    """The tf.function path the command uses gives the eager path's losses and weights, and
    traces its step once although the batches' ground-truth row counts differ (a trace
    per count costs seconds each)."""
    (tmp_path / "tiny.prototxt").write_text(TINY_NET)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'train_net: "{tmp_path / "tiny.prototxt"}"\ntype: "RMSProp"\nbase_lr: 0.01\n'
                      'lr_policy: "fixed"\nweight_decay: 0.0005\nmax_iter: 3\nrandom_seed: 1\niter_size: 2\n')
    batches = synthetic_batches(2, 32, 3, 3, seed=7)
    assert len({len(rows) for _, rows in batches}) > 1
    runs = {}
    for compiled in (True, False):
        trainer = Trainer(solver, input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False,
                          compiled=compiled)
        runs[compiled] = (losses_of(trainer, 3), trainer.store.arrays())
        if compiled:
            assert trainer._step_fn.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-5)
    for name, arrays in runs[True][1].items():
        for a, b in zip(arrays, runs[False][1][name]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)


def test_fused_iterations_equal_a_step_then_an_update(tmp_path):
    """train_iteration (what `train` runs): with iter_size 1 the forward, backward and
    RMSProp update are one compiled call. Over 4 iterations its losses, rates, weights
    and solver history equal iteration() then solver.step() within float32 rounding, and
    it traces once for batches with different box counts. With iter_size 2 it falls back
    to the two calls."""
    (tmp_path / "tiny.prototxt").write_text(TINY_NET)
    batches = synthetic_batches(2, 32, 3, 3, seed=5)
    assert len({len(rows) for _, rows in batches}) > 1
    runs = {}
    for fused in (True, False):
        solver = tmp_path / f"solver{fused}.prototxt"
        solver.write_text(f'train_net: "{tmp_path / "tiny.prototxt"}"\ntype: "RMSProp"\nbase_lr: 0.01\n'
                          'lr_policy: "step"\nstepsize: 2\ngamma: 0.5\nweight_decay: 0.0005\nmax_iter: 4\n'
                          'random_seed: 1\n')
        trainer = Trainer(solver, input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False)
        assert (trainer._fused_fn is not None) is True
        if fused:
            seen = [trainer.train_iteration() for _ in range(4)]
            assert trainer._fused_fn.experimental_get_tracing_count() == 1
            assert trainer._step_fn.experimental_get_tracing_count() == 0
        else:
            seen = []
            for _ in range(4):
                loss, outputs, grads = trainer.iteration()
                seen.append((loss, outputs, trainer.solver.step(grads)))
        assert trainer.solver.iter == 4
        runs[fused] = (seen, trainer.store.arrays(), [h.numpy() for h in trainer.solver.history])
    (fused_seen, fused_weights, fused_history), (plain_seen, plain_weights, plain_history) = runs[True], runs[False]
    assert [rate for _, _, rate in fused_seen] == [rate for _, _, rate in plain_seen]
    np.testing.assert_allclose([rate for _, _, rate in fused_seen], [0.01, 0.01, 0.005, 0.005], rtol=1e-6)
    np.testing.assert_allclose([loss for loss, _, _ in fused_seen], [loss for loss, _, _ in plain_seen], rtol=1e-5)
    for name, arrays in fused_weights.items():
        for a, b in zip(arrays, plain_weights[name]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)
    for a, b in zip(fused_history, plain_history):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8)
    solver = tmp_path / "accumulated.prototxt"
    solver.write_text(f'train_net: "{tmp_path / "tiny.prototxt"}"\ntype: "SGD"\nbase_lr: 0.01\n'
                      'lr_policy: "fixed"\nmax_iter: 1\niter_size: 2\n')
    trainer = Trainer(solver, input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False)
    assert trainer._fused_fn is None
    trainer.train_iteration()
    assert trainer.solver.iter == 1


def test_xla_compiled_steps_equal_the_plain_steps(tmp_path):
    """xla=True (`train --xla`): the net up to its loss layers and the solver update compiled by
    XLA, the numpy matching between them; losses and weights after 3 RMSProp iterations of the
    BatchNorm+Scale net equal the plain compiled run within 1e-4 (float32 rounding of a
    different kernel order)."""
    (tmp_path / "tiny.prototxt").write_text(TINY_NET)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'train_net: "{tmp_path / "tiny.prototxt"}"\ntype: "RMSProp"\nbase_lr: 0.01\n'
                      'lr_policy: "fixed"\nweight_decay: 0.0005\nmax_iter: 3\nrandom_seed: 1\n')
    batches = synthetic_batches(2, 32, 3, 3, seed=8)
    runs = {}
    for xla in (True, False):
        trainer = Trainer(solver, input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False, xla=xla)
        runs[xla] = (losses_of(trainer, 3), trainer.store.arrays())
    if_xla = runs[True][1]
    assert runs[True][0][0] > 0
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-4)
    for name, arrays in runs[False][1].items():
        for a, b in zip(arrays, if_xla[name]):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=name)


def conv_nchw(x, w, stride, pad):
    """A plain numpy convolution (NCHW, OIHW, no bias): the reference for the executor's."""
    n, _, h, width = x.shape
    k = w.shape[2]
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1
    out = np.zeros((n, w.shape[0], oh, ow))
    for i in range(k):
        for j in range(k):
            patch = padded[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j].astype(np.float64))
    return out


def test_bn_recompute_stores_the_plain_mean_of_training_batches_at_the_snapshots_weights(tmp_path):
    """bn_recompute=N (`train --bn-recompute N`): before a snapshot the BatchNorm blobs hold
    sums over N training batches at the final weights and weight N, so the stored mean and
    variance are the plain means of the batches' (Caffe's m/(m-1)-corrected) statistics,
    computed here from the snapshot's conv weights by a numpy convolution (rtol 1e-4).
    The weights are untouched, a second recompute gives the same statistics, and without
    the option the same run stores Caffe's running averages (weight 1 + 0.999)."""
    from caffessd.protoio import blob_to_array, read_caffemodel

    (tmp_path / "tiny.prototxt").write_text(TINY_NET)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'train_net: "{tmp_path / "tiny.prototxt"}"\ntype: "Adam"\nbase_lr: 0.01\nmomentum: 0.9\n'
                      f'momentum2: 0.999\nlr_policy: "fixed"\nmax_iter: 2\nrandom_seed: 1\nsnapshot: 2\n'
                      f'snapshot_prefix: "{tmp_path / "net"}"\n')
    batches = synthetic_batches(2, 32, 3, 3, seed=9)
    trainer = Trainer(solver, input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False,
                      bn_recompute=3)
    trainer.solve()
    model = read_caffemodel(tmp_path / "net_iter_2.caffemodel")
    blobs = {layer.name: [blob_to_array(b) for b in layer.blobs] for layer in model.layer}
    means, variances = [], []
    for images, _ in batches:
        y = conv_nchw(images, blobs["conv1"][0], stride=2, pad=1)
        m = y.shape[0] * y.shape[2] * y.shape[3]
        means.append(y.mean(axis=(0, 2, 3)))
        variances.append(y.var(axis=(0, 2, 3)) * m / (m - 1))
    mean_sum, var_sum, factor = blobs["conv1/bn"]
    assert float(factor.ravel()[0]) == 3.0
    np.testing.assert_allclose(mean_sum / 3, np.mean(means, axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(var_sum / 3, np.mean(variances, axis=0), rtol=1e-4, atol=1e-6)

    weights = trainer.store.arrays()
    trainer.bn_recompute()
    again = trainer.store.arrays()
    for name, arrays in weights.items():
        for a, b in zip(arrays, again[name]):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=name)

    plain = Trainer(solver, input_fn=synthetic_input({"TRAIN": batches}), log=no_log, progress=False)
    plain.solve()
    assert plain.store.arrays()["conv1/bn"][2].ravel()[0] == pytest.approx(1.999)


def test_fused_step_on_a_non_finite_pass_changes_no_variable(tmp_path):
    """The fused step's update runs inside the graph only when the loss and every
    gradient are finite: a batch with a NaN pixel (after one good step, so the RMSProp
    history is not zero) raises NonFiniteLoss and leaves every weight, BatchNorm statistic
    and history blob bit for bit as it was, without a second trace."""
    (tmp_path / "tiny.prototxt").write_text(TINY_NET)
    good = synthetic_batches(2, 32, 3, 1, seed=5)[0]
    bad = (good[0].copy(), good[1])
    bad[0][0, 0, 3, 3] = np.nan
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'train_net: "{tmp_path / "tiny.prototxt"}"\ntype: "RMSProp"\nbase_lr: 0.01\n'
                      'lr_policy: "fixed"\nweight_decay: 0.0005\nmax_iter: 2\nrandom_seed: 1\n')
    trainer = Trainer(solver, input_fn=synthetic_input({"TRAIN": [good, bad]}), log=no_log, progress=False)
    assert trainer._fused_fn is not None
    trainer.train_iteration()
    weights, history = trainer.store.arrays(), [h.numpy().copy() for h in trainer.solver.history]
    assert any(np.any(h != 0) for h in history)
    with pytest.raises(NonFiniteLoss, match="iteration 1"):
        trainer.train_iteration()
    assert trainer._fused_fn.experimental_get_tracing_count() == 1
    for name, arrays in trainer.store.arrays().items():
        for a, b in zip(arrays, weights[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for a, b in zip(trainer.solver.history, history):
        np.testing.assert_array_equal(a.numpy(), b)
