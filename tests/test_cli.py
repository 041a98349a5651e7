"""The command line as a whole: version, help, and the core commands' imports."""
import subprocess
import sys

import pytest

from caffessd import __version__
from caffessd.cli import COMMANDS
from conftest import FACE_CAFFEMODEL, FACE_PHOTOS, FACE_PROTOTXT, ROOT

CORE_COMMANDS = ["gen-model", "merge-bn", "detect", "export-onnx", "inspect", "make-lmdb", "inspect-lmdb", "eval",
                 "quantize", "fit-priors", "lint-dataset"]


def test_version(run_cli):
    result = run_cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_help_lists_every_command(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    for name, _ in COMMANDS:
        assert name in result.stdout
    assert set(CORE_COMMANDS) <= {name for name, _ in COMMANDS}


def test_unknown_command_is_a_usage_error(run_cli):
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "No such command" in result.stderr


# Each core command with arguments that make it do its real work.
CORE_RUNS = {
    "inspect": ["inspect", FACE_PROTOTXT],
    "gen-model": ["gen-model", "--backbone", "mnv2", "--head", "ssdlite", "--stage", "deploy", "-o", "{tmp}/gen"],
    "export-onnx": ["export-onnx", FACE_PROTOTXT, FACE_CAFFEMODEL, "-o", "{tmp}/face.onnx"],
    "detect": ["detect", FACE_PHOTOS[0], "--out", "{tmp}/det", "--cache-dir", "{tmp}/cache"],
    "merge-bn": ["merge-bn", "--model", FACE_PROTOTXT, "--weights", FACE_CAFFEMODEL, "-o", "{tmp}/merged/face"],
    "make-lmdb": ["make-lmdb", "{tmp}/voc", "-f", "voc", "-s", "test", "-o", "{tmp}/new_lmdb", "--resize", "30x20"],
    "inspect-lmdb": ["inspect-lmdb", "{tmp}/test_lmdb", "--show", "1"],
    "eval": ["eval", "--dataset", "{tmp}/facevoc", "--format", "voc", "--split", "test", "--out", "{tmp}/report"],
    "quantize": ["quantize", "{tmp}/face.onnx", "--calibrate", FACE_PHOTOS[0].parent, "--images", "1",
                 "-o", "{tmp}/face-int8.onnx"],
    "fit-priors": ["fit-priors", "{tmp}/gen/train.prototxt", "--dataset", "{tmp}/voc", "-f", "voc", "-s", "trainval",
                   "--suggest", "--out", "{tmp}/fit", "--no-plots"],
    "lint-dataset": ["lint-dataset", "{tmp}/voc", "-f", "voc", "-s", "test"],
}


def _prepare_dataset(name, tmp_path):
    """make-lmdb needs a dataset, inspect-lmdb an LMDB: small ones, written here."""
    if name in ("make-lmdb", "inspect-lmdb", "fit-priors", "lint-dataset"):
        from dataset_builders import make_voc
        make_voc(tmp_path / "voc")
    if name == "fit-priors":
        from caffessd.generators import SSDConfig, generate
        generate(SSDConfig(input_width=64, input_height=64, num_classes=21, width=0.25), tmp_path / "gen", ["train"])
    if name == "eval":
        from eval_builders import make_face_voc
        make_face_voc(tmp_path / "facevoc")
    if name == "quantize":
        from caffessd.onnxconv import convert
        (tmp_path / "face.onnx").write_bytes(convert(FACE_PROTOTXT, FACE_CAFFEMODEL).SerializeToString())
    if name == "inspect-lmdb":
        from caffessd.datasets import open_dataset
        from caffessd.datasets.lmdb_writer import make_lmdb
        make_lmdb(open_dataset(tmp_path / "voc", "voc", "test"), tmp_path / "test_lmdb", {"dog": 1, "person": 2},
                  progress=False)


@pytest.mark.parametrize("name", CORE_COMMANDS)
def test_core_commands_do_not_import_tensorflow(name, tmp_path):
    """gen-model, merge-bn, detect, export-onnx and inspect run on a plain install:
    none of them may pull in TensorFlow (only convert-tf needs the tf extra)."""
    _prepare_dataset(name, tmp_path)
    args = [str(a).format(tmp=tmp_path) for a in CORE_RUNS[name]]
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from caffessd.cli import cli\n"
        f"result = CliRunner().invoke(cli, {args!r})\n"
        "assert result.exit_code == 0, (result.output, result.exception)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout
