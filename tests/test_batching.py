"""Batched, pipelined detection (caffessd.inference.batching) and the session
cache (caffessd.inference.session): results and their order must not depend on
--batch or on the number of threads."""
import json

import numpy as np
import pytest
from PIL import Image

from caffessd.resources import bundled
from caffessd.inference.detector import Detector

FACE = bundled("yufacedetectnet", "keliamoniz1.jpg").parent


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Seven photos of different sizes (crops, flips, rescales of the bundled two)."""
    folder = tmp_path_factory.mktemp("photos")
    sources = [Image.open(FACE / "keliamoniz1.jpg"), Image.open(FACE / "keliamoniz2.jpg")]
    variants = [sources[0], sources[1], sources[0].transpose(Image.FLIP_LEFT_RIGHT),
                sources[1].crop((100, 40, 420, 360)), sources[0].resize((333, 517)),
                sources[1].transpose(Image.FLIP_LEFT_RIGHT).resize((800, 600)), sources[0].crop((250, 80, 520, 420))]
    paths = []
    for index, image in enumerate(variants):
        path = folder / f"photo{index}.jpg"
        image.convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


def _as_dicts(results):
    return [(str(r.source), [d.to_dict() for d in r.detections]) for r in results]


def test_batches_and_threads_give_one_by_one_results(photos, model_cache):
    single = Detector(cache=model_cache, threshold=0.3)
    expected = [(str(p), [d.to_dict() for d in single(p)]) for p in photos]
    assert sum(len(found) for _, found in expected) >= len(photos), "faces found in the photos"
    assert _as_dicts(single.detect_many(photos, workers=0)) == expected
    batched = Detector(cache=model_cache, threshold=0.3, batch=3)  # 7 images: batches of 3, 3 and 1 (+2 fillers)
    assert batched.session.get_inputs()[0].shape[0] == 3
    for workers in (0, 1, 3):
        assert _as_dicts(batched.detect_many(photos, workers=workers)) == expected
    # Runs side by side on their own threads (a 1-thread session, as detect --streams makes it).
    streamed = Detector(cache=model_cache, threshold=0.3, threads=1)
    for streams, workers in ((2, 2), (3, 0)):
        assert _as_dicts(streamed.detect_many(photos, workers=workers, streams=streams)) == expected
    assert _as_dicts(batched.detect_many(photos, workers=1, streams=2)) == expected


def test_arrays_and_a_bad_file_keep_their_place(photos, model_cache, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    detector = Detector(cache=model_cache, batch=2)
    arrays = [np.asarray(Image.open(p).convert("RGB"))[:, :, ::-1].copy() for p in photos[:3]]
    inputs = [photos[0], broken, arrays[1], photos[2], arrays[2]]
    results = list(detector.detect_many(inputs, workers=2))
    assert [r.error is not None for r in results] == [False, True, False, False, False]
    assert _as_dicts(detector.detect_many(inputs, workers=2, streams=2)) == _as_dicts(results)
    assert str(broken) in str(results[1].error)
    one_by_one = Detector(cache=model_cache)
    for source, result in zip(inputs, results):
        if result.error is None:
            assert [d.to_dict() for d in result.detections] == [d.to_dict() for d in one_by_one(source)]


def test_cli_batch_and_workers_write_the_same_json(photos, run_cli, tmp_path):
    folder = photos[0].parent
    runs = {}
    for name, extra in {"plain": ["--batch", "1", "--workers", "0"], "batched": ["--batch", "4", "--workers", "3"],
                        "threads": ["--workers", "1", "--threads", "1"], "streams": ["--streams", "2"]}.items():
        out = tmp_path / name
        result = run_cli("detect", folder, "--out", out, "--cache-dir", tmp_path / "cache", *extra)
        assert result.returncode == 0, result.stderr
        runs[name] = json.loads((out / "detections.json").read_text())
        assert len(list(out.glob("*.jpg"))) == len(photos)  # the writer thread finished every image
        for entry in runs[name]:
            entry["annotated"] = entry["annotated"].replace(str(out), "OUT")
    assert runs["plain"] == runs["batched"] == runs["threads"] == runs["streams"]
    assert [entry["file"] for entry in runs["plain"]] == [str(p) for p in photos]


def test_exported_batch_model(run_cli, photos, tmp_path):
    model = tmp_path / "face-b2.onnx"
    labels = tmp_path / "labelmap.prototxt"
    labels.write_text('item { name: "background" label: 0 }\nitem { name: "face" label: 1 }\n')
    done = run_cli("export-onnx", FACE / "yufacedetectnet-open-v2.prototxt",
                   FACE / "yufacedetectnet-open-v2.caffemodel", "-o", model, "--batch", "2", "--mean", "0", "--scale", "1", "--bgr",
                   "--labels", labels)
    assert done.returncode == 0, done.stderr
    one = run_cli("detect", *photos[:3], "--onnx", model, "--out", tmp_path / "b2", "--cache-dir", tmp_path / "c")
    assert one.returncode == 0, one.stderr
    single = run_cli("detect", *photos[:3], "--out", tmp_path / "b1", "--cache-dir", tmp_path / "c")
    assert one.stdout == single.stdout
    wrong = run_cli("detect", photos[0], "--onnx", model, "--batch", "3", "--out", tmp_path / "b3",
                    "--cache-dir", tmp_path / "c")
    lines = wrong.stderr.strip().splitlines()
    assert wrong.returncode == 1 and len(lines) == 1 and "takes batches of 2" in lines[0] and str(model) in lines[0]


def test_optimized_model_is_cached_and_reused(model_cache, photos):
    first = Detector(cache=model_cache)
    optimized = list((model_cache / "optimized").glob("*.onnx"))
    assert optimized, "the optimised graph is saved in the cache"
    stamp = optimized[0].stat().st_mtime_ns
    second = Detector(cache=model_cache)
    assert optimized[0].stat().st_mtime_ns == stamp, "the second start loads it, no rewrite"
    assert [d.to_dict() for d in first(photos[1])] == [d.to_dict() for d in second(photos[1])]
    optimized[0].write_bytes(b"truncated")  # a damaged model_cache file is rebuilt, not an error
    third = Detector(cache=model_cache)
    assert [d.to_dict() for d in third(photos[1])] == [d.to_dict() for d in first(photos[1])]


def test_dynamic_batch_export(run_cli, photos, tmp_path):
    """`export-onnx --batch dynamic`: one model for any number of images per
    run, each image's rows bit-identical to the one-image export's."""
    import onnx
    import onnxruntime as ort

    net = (FACE / "yufacedetectnet-open-v2.prototxt", FACE / "yufacedetectnet-open-v2.caffemodel")
    options = ["--mean", "0", "--scale", "1", "--bgr"]
    dynamic, single = tmp_path / "face-dynamic.onnx", tmp_path / "face-one.onnx"
    for target, extra in ((dynamic, ["--batch", "dynamic"]), (single, [])):
        done = run_cli("export-onnx", *net, "-o", target, *options, *extra)
        assert done.returncode == 0, done.stderr
    model = onnx.load(dynamic)
    onnx.checker.check_model(model, full_check=True)
    assert {p.key for p in model.metadata_props} == {p.key for p in onnx.load(single).metadata_props}
    assert [n.op_type for n in model.graph.node].count("Loop") == 1

    loop, one = ort.InferenceSession(str(dynamic)), ort.InferenceSession(str(single))
    assert loop.get_inputs()[0].shape[0] == "batch"
    rng = np.random.default_rng(7)
    blobs = rng.uniform(0, 255, (4, *one.get_inputs()[0].shape[1:])).astype(np.float32)
    blobs[2] = 0.0  # a blank image: the one-image model's all-zero "nothing found" row
    for count in (1, 2, 4):
        rows = loop.run(None, {"data": blobs[:count]})[0]
        assert rows.shape[:2] == (1, 1) and rows.shape[3] == 7
        rows = rows.reshape(-1, 7)
        for index in range(count):
            expected = one.run(None, {"data": blobs[index:index + 1]})[0].reshape(-1, 7).copy()
            expected[:, 0] = index
            assert np.array_equal(rows[rows[:, 0] == index], expected)

    reference = Detector(onnx_path=single, threshold=0.3)
    expected = [[d.to_dict() for d in reference(p)] for p in photos]
    detector = Detector(onnx_path=dynamic, threshold=0.3)
    for batch, streams in ((None, 1), (3, 1), (7, 1), (2, 2)):
        found = detector.detect_many(photos, batch=batch, workers=2, streams=streams)
        assert [[d.to_dict() for d in r.detections] for r in found] == expected

    # quantize takes the one-image graph out of the Loop and wraps the int8 one again.
    for source in (dynamic, single):
        done = run_cli("quantize", source, "--calibrate", photos[0].parent, "-o", source.with_suffix(".int8.onnx"))
        assert done.returncode == 0, done.stderr
    loop_int8 = ort.InferenceSession(str(dynamic.with_suffix(".int8.onnx")))
    one_int8 = ort.InferenceSession(str(single.with_suffix(".int8.onnx")))
    rows = loop_int8.run(None, {"data": blobs[:3]})[0].reshape(-1, 7)
    for index in range(3):
        expected = one_int8.run(None, {"data": blobs[index:index + 1]})[0].reshape(-1, 7).copy()
        expected[:, 0] = index
        assert np.array_equal(rows[rows[:, 0] == index], expected)

    cli = run_cli("detect", *photos[:4], "--onnx", dynamic, "--batch", "3", "--out", tmp_path / "out")
    assert cli.returncode == 0, cli.stderr
    refused = run_cli("export-onnx", *net, "-o", tmp_path / "raw.onnx", "--raw", "--batch", "dynamic")
    assert refused.returncode != 0 and "--batch dynamic" in refused.stderr and not (tmp_path / "raw.onnx").exists()
    wrong = run_cli("export-onnx", *net, "-o", tmp_path / "w.onnx", "--batch", "some")
    assert wrong.returncode != 0 and "'some'" in wrong.stderr


def _spinning(detector):
    """(allow_spinning, force_spinning_stop) of the engine's session; "-" where unset."""
    options = detector.engine.session.get_session_options()

    def entry(key):
        try:
            return options.get_session_config_entry(key)
        except RuntimeError:  # onnxruntime raises for a key that was never set
            return "-"
    return entry("session.intra_op.allow_spinning"), entry("session.force_spinning_stop")


def test_threads_spin_within_a_run_for_single_images_and_never_beside_decoding(photos, tmp_path, capfd):
    """onnxruntime fixes its threads' spinning when a session is made. A new
    Detector spins within each run and stops when it ends (serial work); a
    pipeline with decoding threads gets a session that never spins, made
    from the cached optimised graph (no warning), and the same detections."""
    detector = Detector(cache=tmp_path / "cache", threshold=0.3, threads=2)
    assert detector.engine.workload == "serial" and _spinning(detector) == ("1", "1")
    expected = [(str(p), [d.to_dict() for d in detector(p)]) for p in photos]
    assert _as_dicts(detector.detect_many(photos, workers=2)) == expected
    assert detector.engine.workload == "pipelined" and _spinning(detector) == ("0", "-")
    assert _as_dicts(detector.detect_many(photos, workers=0)) == expected
    assert detector.engine.workload == "serial" and _spinning(detector) == ("1", "1")
    assert "warning" not in capfd.readouterr().err
    with pytest.raises(Exception, match="unknown workload"):
        detector.engine.set_workload("fast")
    # Told up front (as `caffessd detect FOLDER` does): the first session is already the pipelined one.
    folder = Detector(cache=tmp_path / "cache", threshold=0.3, threads=2, workload="pipelined")
    session = folder.engine.session
    assert _spinning(folder) == ("0", "-")
    assert _as_dicts(folder.detect_many(photos, workers=2)) == expected
    assert folder.engine.session is session, "no second session"
