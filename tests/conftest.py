"""Shared test fixtures: paths to the reference material and the face detector.

Everything the tests read lives in the checkout: the face detector and its two
photos in models/yufacedetectnet, the published chuanqi305 prototxts, labelmaps
and solvers in tests/data (MIT, their LICENSE files beside them).
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FACE_DIR = ROOT / "models" / "yufacedetectnet"
FACE_PROTOTXT = FACE_DIR / "yufacedetectnet-open-v2.prototxt"
FACE_CAFFEMODEL = FACE_DIR / "yufacedetectnet-open-v2.caffemodel"
FACE_PHOTOS = [FACE_DIR / "keliamoniz1.jpg", FACE_DIR / "keliamoniz2.jpg"]
REFERENCE = ROOT / "tests" / "data"
MNV1_REF = REFERENCE / "chuanqi305-MobileNet-SSD"
MNV2_REF = REFERENCE / "chuanqi305-MobileNetv2-SSDLite"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing from the checkout: {path}")
    return path


@pytest.fixture(scope="session")
def face_prototxt():
    return _require(FACE_PROTOTXT)


@pytest.fixture(scope="session")
def face_caffemodel():
    return _require(FACE_CAFFEMODEL)


@pytest.fixture(scope="session")
def face_photos():
    return [_require(p) for p in FACE_PHOTOS]


def run_in_process(argv, capsys) -> tuple:
    """Run caffessd's CLI in this process: (exit code, stderr, stdout)."""
    from caffessd.cli import main

    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    captured = capsys.readouterr()
    return code, captured.err, captured.out


@pytest.fixture(scope="session")
def run_cli():
    """Run `python -m caffessd ARGS...` in a subprocess (real exit codes and stderr)."""
    import subprocess
    import sys

    def run(*args, cwd=None, env=None):
        # The checkout under test comes first on the path, installed or not.
        env = dict(env if env is not None else os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return subprocess.run([sys.executable, "-m", "caffessd", *map(str, args)],
                              capture_output=True, text=True, cwd=cwd or ROOT, env=env)
    return run
