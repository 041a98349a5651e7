"""gen-model's solver for the run asked for: --max-iter scales the schedule to the run,
--from-scratch writes what training without pretrained weights needs, and both stay
files that Caffe itself reads (fields of caffe.proto, lr_policy values that the SSD
fork's SGDSolver::GetLearningRate knows, checked against its source list)."""
import pytest

from caffessd import caffe_pb2
from caffessd.protoio import read_prototxt
from conftest import prior_layout, run_in_process

# SGDSolver<Dtype>::GetLearningRate in weiliu89/caffe (ssd branch), src/caffe/solvers/sgd_solver.cpp.
FORK_LR_POLICIES = {"fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid", "plateau"}


def generate(tmp_path, capsys, *options):
    code, err, _ = run_in_process(["gen-model", "--backbone", "mnv1", "--input", "96", "--classes", "4", *options,
                                   "-o", tmp_path], capsys)
    assert code == 0, err
    solver = read_prototxt(tmp_path / "solver_train.prototxt", caffe_pb2.SolverParameter)
    return solver, read_prototxt(tmp_path / "train.prototxt"), read_prototxt(tmp_path / "test.prototxt")


def moving_averages(net):
    return {round(layer.batch_norm_param.moving_average_fraction, 6)
            if layer.batch_norm_param.HasField("moving_average_fraction") else None
            for layer in net.layer if layer.type == "BatchNorm"}


def lr_mults(net, kind="Convolution"):
    return {round(layer.param[0].lr_mult, 6) for layer in net.layer if layer.type == kind and "mbox_conf" not in layer.name}


def test_defaults_stay_the_published_schedule(tmp_path, capsys):
    solver, train, _ = generate(tmp_path, capsys)
    assert (solver.type, solver.max_iter, solver.lr_policy, solver.gamma) == ("RMSProp", 120000, "multistep", 0.5)
    assert (list(solver.stepvalue), solver.test_interval, solver.snapshot) == ([20000, 40000], 10000, 1000)
    assert solver.base_lr == pytest.approx(0.0005)
    assert moving_averages(train) == {None}  # Caffe's 0.999, unwritten as in the published nets
    assert lr_mults(train) == {0.1}


def test_max_iter_scales_steps_intervals_and_batchnorm_window(tmp_path, capsys):
    solver, train, test = generate(tmp_path, capsys, "--max-iter", "3000")
    assert (solver.type, solver.max_iter, list(solver.stepvalue)) == ("RMSProp", 3000, [500, 1000])
    assert (solver.test_interval, solver.snapshot) == (300, 300)
    # A window of 3000 / 20 = 150 iterations: fraction 1 - 1/150.
    assert moving_averages(train) == {round(1 - 1 / 150, 6)}
    assert moving_averages(test) == {None}  # only training updates the statistics
    solver, _, _ = generate(tmp_path, capsys, "--max-iter", "25", "--snapshot", "5")
    assert (solver.test_interval, solver.snapshot) == (3, 5)


def test_from_scratch_writes_adam_with_poly_decay_full_rates_and_light_augmentation(tmp_path, capsys):
    solver, train, test = generate(tmp_path, capsys, "--max-iter", "2000", "--from-scratch")
    assert (solver.type, solver.lr_policy, solver.power) == ("Adam", "poly", 1.0)
    assert (solver.momentum, solver.momentum2) == (pytest.approx(0.9), pytest.approx(0.999))
    assert solver.base_lr == pytest.approx(0.005) and not solver.stepvalue
    assert lr_mults(train) == {1.0}  # mnv1 otherwise fine-tunes its backbone at 0.1
    # From scratch the window is 10 iterations whatever the run's length (without it 2000 / 20 = 100).
    assert moving_averages(train) == {0.9}
    data = train.layer[0]
    assert not data.transform_param.HasField("distort_param") and not data.transform_param.HasField("expand_param")
    assert data.transform_param.mirror and len(data.annotated_data_param.batch_sampler) == 7  # whole image + 6 crops
    assert not test.layer[0].transform_param.mirror  # the test net only warps
    solver, train, _ = generate(tmp_path, capsys, "--max-iter", "2000", "--from-scratch", "--lr", "0.01")
    assert solver.base_lr == pytest.approx(0.01)
    for options, loss in ((("--backbone", "mnv2", "--from-scratch"), caffe_pb2.MultiBoxLossParameter.SOFTMAX),
                          (("--backbone", "mnv2"), caffe_pb2.MultiBoxLossParameter.LOGISTIC),
                          (("--backbone", "mnv2", "--from-scratch", "--conf-loss", "logistic"),
                           caffe_pb2.MultiBoxLossParameter.LOGISTIC)):
        _, train, _ = generate(tmp_path, capsys, "--max-iter", "2000", *options)
        assert train.layer[-1].multibox_loss_param.conf_loss_type == loss, options
    solver, train, _ = generate(tmp_path, capsys, "--max-iter", "2000")
    assert train.layer[0].transform_param.HasField("expand_param")  # the published augmentation otherwise


def predictor_fillers(net):
    """{filler type and std} of the box and class predictors, and of every other convolution."""
    heads, others = set(), set()
    for layer in net.layer:
        if layer.type == "Convolution":
            filler = layer.convolution_param.weight_filler
            kind = (filler.type, round(filler.std, 6) if filler.type == "gaussian" else
                    caffe_pb2.FillerParameter.VarianceNorm.Name(filler.variance_norm))
            (heads if layer.top[0].endswith(("_mbox_loc", "_mbox_conf")) else others).add(kind)
    return heads, others


@pytest.mark.parametrize("backbone, head", [("mnv1", "ssd"), ("mnv2", "ssdlite")])
def test_from_scratch_starts_the_predictors_small(tmp_path, capsys, backbone, head):
    """--from-scratch fills the box and class predictors N(0, 0.03) (torchvision's SSD heads)
    and every other convolution with msra's FAN_OUT form (torchvision's MobileNets); without
    it every convolution keeps Caffe's msra filler in its default FAN_IN form."""
    common = ("--backbone", backbone, "--head", head, "--max-iter", "500")
    _, train, _ = generate(tmp_path / "published", capsys, *common)
    assert predictor_fillers(train) == ({("msra", "FAN_IN")}, {("msra", "FAN_IN")})
    _, train, _ = generate(tmp_path / "scratch", capsys, *common, "--from-scratch",
                           "--init-weights", tmp_path / "init.caffemodel")
    assert predictor_fillers(train) == ({("gaussian", 0.03)}, {("msra", "FAN_OUT")})
    # The filler is what initialises them: the predictors' weights have std 0.03 (within 10 %).
    from caffessd.protoio import blob_to_array, read_caffemodel

    model = read_caffemodel(tmp_path / "init.caffemodel")
    weights = {layer.name: blob_to_array(layer.blobs[0]) for layer in model.layer if layer.blobs}
    predictors = [name for name in weights if name.endswith(("_mbox_loc", "_mbox_conf"))]
    assert len(predictors) == 12
    for name in predictors:
        assert weights[name].std() == pytest.approx(0.03, rel=0.1), name
        assert abs(weights[name].mean()) < 0.01, name
    # FAN_OUT as Caffe's MSRAFiller computes it: std sqrt(2 / (count / shape[1])), so
    # sqrt(2 / (9 x channels)) for a depthwise 3x3 and sqrt(2 / outputs) for a 1x1.
    convs = {layer.name: layer.convolution_param for layer in train.layer if layer.type == "Convolution"}
    depthwise = [n for n, c in convs.items() if c.group > 1 and c.group == c.num_output and n in weights]
    pointwise = [n for n, c in convs.items() if list(c.kernel_size) == [1] and n in weights and n not in predictors]
    for name in depthwise[-1:] + pointwise[-1:]:
        shape = weights[name].shape
        expected = (2.0 / (weights[name].size / shape[1])) ** 0.5
        assert weights[name].std() == pytest.approx(expected, rel=0.1), (name, shape)


@pytest.mark.parametrize("backbone, head", [("mnv1", "ssd"), ("mnv2", "ssdlite")])
def test_from_scratch_gives_the_first_head_the_priors_of_the_others(tmp_path, capsys, backbone, head):
    """The published first head has 3 boxes (min size 0.2 of the side, ratio 2: what the
    converted TF weights expect); --from-scratch gives it the 6 of the others, as torchvision's
    SSDlite (DefaultBoxGenerator: ratios [2, 3] on every map, scales 0.2 + 0.15 k, the extra
    square sqrt(s_k s_k+1)). At 160: min sizes 0.2, 0.35, ... 0.95 x 160 = 32, 56, 80, 104,
    128, 152; max sizes the next scale (1.0 after the last): 56, 80, ..., 160; 6 boxes x 4
    classes = 24 class outputs per cell."""
    common = ("--backbone", backbone, "--head", head, "--input", "160", "--max-iter", "500")
    mins = [[32.0], [56.0], [80.0], [104.0], [128.0], [152.0]]
    _, train, _ = generate(tmp_path / "published", capsys, *common)
    priors, conf = prior_layout(train)
    assert [p[0] for p in priors] == mins
    assert [p[1] for p in priors] == [[], [80.0], [104.0], [128.0], [152.0], [160.0]]
    assert [p[2] for p in priors] == [[2.0]] + [[2.0, 3.0]] * 5
    assert conf == [12] + [24] * 5
    _, train, test = generate(tmp_path / "scratch", capsys, *common, "--from-scratch")
    for net in (train, test):
        priors, conf = prior_layout(net)
        assert [p[0] for p in priors] == mins
        assert [p[1] for p in priors] == [[56.0], [80.0], [104.0], [128.0], [152.0], [160.0]]
        assert [p[2] for p in priors] == [[2.0, 3.0]] * 6
        assert conf == [24] * 6
    # An explicit layout still wins over --from-scratch's.
    _, train, _ = generate(tmp_path / "explicit", capsys, *common, "--from-scratch", "--aspect-ratios", "2",
                           "--max-sizes", "-,80,104,128,152,160")
    priors, conf = prior_layout(train)
    assert priors[0] == ([32.0], [], [2.0]) and conf == [12] + [16] * 5
    # So do TF's exact lowest-layer boxes: the same 3 as without --from-scratch.
    layouts = [prior_layout(generate(tmp_path / name, capsys, *common, *extra, "--tf-lowest-anchors")[1])
               for name, extra in (("tf", ()), ("tf-scratch", ("--from-scratch",)))]
    assert layouts[0][0][0] == layouts[1][0][0] and layouts[0][1][0] == layouts[1][1][0] == 12


def test_bn_window_sets_the_train_nets_averaging(tmp_path, capsys):
    """--bn-window N: Caffe's moving_average_fraction 1 - 1/N in every train-net BatchNorm,
    whatever --max-iter and --from-scratch would choose; the test net keeps its stored
    statistics (no fraction written)."""
    for options, fraction in ((("--bn-window", "20"), 0.95),
                              (("--max-iter", "3000", "--bn-window", "4"), 0.75),
                              (("--max-iter", "500", "--from-scratch", "--bn-window", "100"), 0.99)):
        _, train, test = generate(tmp_path, capsys, *options)
        assert moving_averages(train) == {fraction}, options
        assert moving_averages(test) == {None}


@pytest.mark.parametrize("options", [(), ("--max-iter", "500"), ("--max-iter", "500", "--from-scratch")])
def test_solver_is_one_caffe_runs(tmp_path, capsys, options):
    """Every field set is one of the fork's caffe.proto (the file parses with it), the
    lr_policy one its solver knows, and the rate falls as Caffe computes it."""
    from caffessd.train.solver import LearningRate

    solver, _, _ = generate(tmp_path, capsys, *options)
    assert solver.lr_policy in FORK_LR_POLICIES
    rate = LearningRate(solver)
    rates = [rate(i) for i in range(solver.max_iter)]
    assert rates[0] == pytest.approx(solver.base_lr)
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    if solver.lr_policy == "poly":
        assert rates[solver.max_iter // 2] == pytest.approx(solver.base_lr / 2)
        assert rates[-1] == pytest.approx(solver.base_lr / solver.max_iter)


def test_bad_schedule_options_are_one_line(tmp_path, capsys):
    for options, words in ((("--max-iter", "-5"), "--max-iter"), (("--lr", "0"), "--lr"),
                           (("--lr", "nan"), "--lr"), (("--bn-window", "1"), "--bn-window")):
        code, err, _ = run_in_process(["gen-model", *options, "-o", tmp_path / "bad"], capsys)
        assert code != 0 and words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()
