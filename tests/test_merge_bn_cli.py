"""`caffessd merge-bn` end to end: output, files, and every error path
(one `caffessd: error:` line on stderr, exit status 1, no files written)."""
import pytest

from caffessd import protoio
from caffessd.cli import main
from caffessd.net import Net
from merge_bn_helpers import batchnorm, conv, header, layer, net_with_random_weights, relu, save_net, scale

SMALL_NET = (header((1, 3, 16, 16)) + conv("c1", "data", "c1", bias=False) + batchnorm("c1/bn", "c1", "c1", eps=1e-3)
             + scale("c1/scale", "c1", "c1") + relu("c1/relu", "c1", "c1")
             + conv("a", "c1", "a", num_output=4) + conv("b", "c1", "b", num_output=4)
             + layer("cat", "Concat", ["a", "b"], ["cat"]) + batchnorm("cat/bn", "cat", "cat_bn"))


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    return save_net(net_with_random_weights(SMALL_NET, seed=21), folder)


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(["merge-bn", *map(str, args)])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caffessd: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_merge_writes_both_files_and_reports(small_net, tmp_path, capsys, face_photos):
    prototxt, caffemodel = small_net
    code, out, err = run_cli(capsys, "--model", prototxt, "--weights", caffemodel, "-o", tmp_path / "out" / "no_bn",
                             "--image", face_photos[0])
    assert code == 0, err
    assert "folded 2 layer(s); kept 1" in out
    assert "kept BatchNorm 'cat/bn': it follows Concat 'cat', which has no weights" in out
    assert "layers: 8 -> 6" in out
    assert "random (seed 0)  cat_bn [1x8x16x16]" in out and f"{face_photos[0]}  cat_bn" in out
    assert "every output within 0.0001 relative" in out
    merged = Net.load(tmp_path / "out" / "no_bn.prototxt", tmp_path / "out" / "no_bn.caffemodel")
    assert [l.type for l in merged.param.layer] == ["Convolution", "ReLU", "Convolution", "Convolution",
                                                    "Concat", "BatchNorm"]


def test_custom_names_and_no_verify(small_net, tmp_path, capsys):
    prototxt, caffemodel = small_net
    code, out, _ = run_cli(capsys, "-m", prototxt, "-w", caffemodel, "--no-verify",
                           "--prototxt-out", tmp_path / "a.prototxt", "--caffemodel-out", tmp_path / "b.caffemodel")
    assert code == 0
    assert "verified" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.prototxt", "b.caffemodel"]


def test_verification_failure_writes_nothing(small_net, tmp_path, capsys):
    # Tolerance 0: float32 rounding alone makes the folded net differ by ~1e-7.
    prototxt, caffemodel = small_net
    code, out, err = run_cli(capsys, "-m", prototxt, "-w", caffemodel, "-o", tmp_path / "no_bn", "--tolerance", "0")
    assert_one_line_error(code, err, "differs from the original", "nothing written")
    assert "FAIL" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["missing model", "weights are text", "weights lack a layer", "no output",
                                  "missing image", "same output file"])
def test_error_paths(case, small_net, tmp_path, capsys):
    prototxt, caffemodel = small_net
    out_dir = tmp_path / "out"
    args = {"model": prototxt, "weights": caffemodel, "-o": out_dir / "no_bn"}
    expected = []
    if case == "missing model":
        args["model"] = tmp_path / "nope.prototxt"
        expected = ["nope.prototxt", "no such file"]
    elif case == "weights are text":
        args["weights"] = prototxt
        expected = ["net.prototxt", "binary caffemodel"]
    elif case == "weights lack a layer":
        partial = protoio.read_caffemodel(caffemodel)
        del partial.layer[0]
        args["weights"] = tmp_path / "partial.caffemodel"
        protoio.write_caffemodel(partial, args["weights"])
        expected = ["has no weights for layer(s) c1"]
    elif case == "no output":
        del args["-o"]
        expected = ["give -o PREFIX"]
    elif case == "missing image":
        args["--image"] = tmp_path / "nope.jpg"
        expected = ["nope.jpg", "no such image"]
    elif case == "same output file":
        del args["-o"]
        args["--prototxt-out"] = args["--caffemodel-out"] = out_dir / "x"
        expected = ["same file"]
    argv = []
    for key, value in args.items():
        argv += [f"--{key}" if not key.startswith("-") else key, value]
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *expected)
    assert not out_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["partial.caffemodel"])
