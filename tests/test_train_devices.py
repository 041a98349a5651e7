"""caffessd.train.devices: which strategy `caffessd train` builds from --gpus and
TF_CONFIG. No GPU here: TensorFlow's device list and MirroredStrategy are
replaced by recorders, so what is checked is the device-list logic."""
import pytest

tf = pytest.importorskip("tensorflow")

from caffessd.errors import CaffessdError  # noqa: E402
from caffessd.train import devices  # noqa: E402


@pytest.fixture
def fake_gpus(monkeypatch):
    """Pretend TensorFlow sees n GPUs; record what becomes visible and what is mirrored."""
    seen = {}

    def install(n):
        gpus = [tf.config.PhysicalDevice(f"/physical_device:GPU:{k}", "GPU") for k in range(n)]
        real = tf.config.list_physical_devices
        monkeypatch.setattr(tf.config, "list_physical_devices",
                            lambda kind=None: list(gpus) if kind == "GPU" else real(kind))
        monkeypatch.setattr(tf.config, "set_visible_devices", lambda chosen, kind: seen.update(visible=list(chosen)))
        monkeypatch.setattr(tf.distribute, "MirroredStrategy", lambda names: ("mirrored", list(names)))
        monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", lambda: ("multiworker",))
        monkeypatch.delenv("TF_CONFIG", raising=False)
        return gpus
    install.seen = seen
    return install


def test_several_gpus_build_a_mirrored_strategy_over_exactly_those(fake_gpus):
    gpus = fake_gpus(4)
    assert devices.training_strategy("1,3") == ("mirrored", ["/gpu:0", "/gpu:1"])
    assert fake_gpus.seen["visible"] == [gpus[1], gpus[3]]
    assert devices.training_strategy("all") == ("mirrored", ["/gpu:0", "/gpu:1", "/gpu:2", "/gpu:3"])
    assert fake_gpus.seen["visible"] == gpus


def test_one_gpu_or_none_is_a_single_device(fake_gpus):
    gpus = fake_gpus(2)
    assert devices.training_strategy("1") is None
    assert fake_gpus.seen["visible"] == [gpus[1]]
    assert devices.training_strategy(None) is None
    fake_gpus(0)
    assert devices.training_strategy(None) is None
    assert devices.training_strategy("all") is None


@pytest.mark.parametrize("gpus, message", [("0,2", r"sees 2 GPU\(s\), no GPU 2"), ("0,0", "named twice"),
                                           ("x", "takes ids like"), ("-1", "no GPU -1")])
def test_bad_gpu_lists_are_one_clear_error(fake_gpus, gpus, message):
    fake_gpus(2)
    with pytest.raises(CaffessdError, match=message):
        devices.training_strategy(gpus)


def test_tf_config_builds_a_multiworker_strategy(fake_gpus):
    fake_gpus(0)
    config = '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}'
    assert devices.training_strategy(None, tf_config=config) == ("multiworker",)
    with pytest.raises(CaffessdError, match="TF_CONFIG is not JSON"):
        devices.training_strategy(None, tf_config="{cluster")


def test_chief_is_the_chief_task_or_worker_zero():
    SimpleClusterResolver = tf.distribute.cluster_resolver.SimpleClusterResolver

    def strategy(cluster, task_type, task_id):
        resolver = SimpleClusterResolver(tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
        return type("Strategy", (), {"cluster_resolver": resolver})()

    workers = {"worker": ["a:1", "b:1"]}
    assert devices.is_chief(None)
    assert devices.is_chief(strategy(workers, "worker", 0))
    assert not devices.is_chief(strategy(workers, "worker", 1))
    with_chief = dict(workers, chief=["c:1"])
    assert devices.is_chief(strategy(with_chief, "chief", 0))
    assert not devices.is_chief(strategy(with_chief, "worker", 0))


def test_mixed_precision_on_cpu_is_one_clear_line(run_cli, tmp_path):
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "train.prototxt"\nbase_lr: 0.01\n')
    result = run_cli("train", solver, "--mixed-precision", env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("caffessd: error:") and "--mixed-precision needs a GPU" in lines[-1]
    assert "Traceback" not in result.stderr
