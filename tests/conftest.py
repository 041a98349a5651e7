"""Shared test fixtures: paths to the reference material and the face detector.

Everything the tests read lives in the checkout: the face detector and its two
photos in models/yufacedetectnet, the published chuanqi305 prototxts, labelmaps
and solvers in tests/data (MIT, their LICENSE files beside them).
"""
import faulthandler
import os
import sys
import threading
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


# A test still running after this many seconds is taken for hung: every
# thread's stack goes to the real stderr and the run ends (exit code 1), so CI
# shows where it stopped instead of running out its own time limit. The slowest
# test (the learning test) takes about 4 minutes on a 2-core machine.
HUNG_AFTER_S = float(os.environ.get("CAFFESSD_TEST_HUNG_AFTER", "900"))


def _give_up(config, nodeid: str) -> None:
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)   # back to the terminal pytest captured
    sys.stderr.write(f"\n{nodeid} is still running after {HUNG_AFTER_S:.0f} s: taken for hung "
                     f"(CAFFESSD_TEST_HUNG_AFTER); the stacks of every thread:\n")
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    watch = None
    if HUNG_AFTER_S > 0:
        watch = threading.Timer(HUNG_AFTER_S, _give_up, args=(item.config, item.nodeid))
        watch.daemon = True
        watch.start()
    try:
        yield
    finally:
        if watch is not None:
            watch.cancel()


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


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """A model cache of the test module's own (CAFFESSD_CACHE / --cache-dir), so
    no test reads or fills the user's."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def detector(model_cache):
    """The embedded default model's Detector, compiled once per test module."""
    from caffessd.inference.detector import Detector

    return Detector(cache=model_cache)


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


def prior_layout(net):
    """(min sizes, max sizes, aspect ratios) of each PriorBox of a NetParameter, and each
    head's class-conv outputs: what gen-model's prior options decide."""
    priors = [(list(l.prior_box_param.min_size), list(l.prior_box_param.max_size),
               [round(a, 6) for a in l.prior_box_param.aspect_ratio])
              for l in net.layer if l.type == "PriorBox"]
    conf = [l.convolution_param.num_output for l in net.layer if l.type == "Convolution"
            and l.top[0].endswith("_mbox_conf")]
    return priors, conf


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
