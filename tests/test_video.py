"""`caffessd detect` on videos and Detector.detect_video, on videos the tests
make with PyAV (tests/video_builders.py: a face moving over a plain
background, its box known in every frame).

What is proven, end to end as a user sees it:
- per-frame detections equal `detect` on the same decoded frames saved as PNG
  images (exact: same pixels, same pipeline), at the times the frames carry;
- the annotated video, decoded again: H.264, same size, rate, frame count as
  the JSON Lines, timestamps on the rate's grid;
- --every / --fps / --start / --duration choose the frames worked out here
  independently;
- a truncated file and one with a corrupt packet in the middle: the frames
  before (and after the next keyframe) are pixel-identical to the intact
  video's, and the skipped count equals the frames missing;
- `-` reads an MPEG-TS stream from a pipe; SIGINT and SIGTERM leave a
  playable video holding exactly the frames of the complete JSON Lines, with
  exit status 130 and 143;
- a live stream (tcp://) that drops is reopened, then given up with one line;
- a display rotation turns frames upright;
- another engine (OpenVINO) runs videos through the same code, with the same faces.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from conftest import FACE_PHOTOS, ROOT, run_in_process

av = pytest.importorskip("av")

from caffessd import Detector, detect_video  # noqa: E402
from video_builders import decode, iou, moving_face, packet_spans, scene, write_video  # noqa: E402

FRAMES = 45


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """45 frames at 30 fps, 320x240, a face moving right 5 px a frame."""
    folder = tmp_path_factory.mktemp("clip")
    return write_video(folder / "walk.mp4", [rgb for rgb, _ in moving_face(FRAMES)])


@pytest.fixture(scope="module")
def clip_results(detector, clip):
    return list(detect_video(detector, clip))


def _lines(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_frames_equal_detect_on_the_same_frames_saved_as_images(clip, clip_results, tmp_path, model_cache, capsys):
    from PIL import Image

    decoded = decode(clip)
    assert len(clip_results) == len(decoded) == FRAMES
    frames = tmp_path / "frames"
    frames.mkdir()
    for number, (_, bgr) in enumerate(decoded):
        Image.fromarray(bgr[:, :, ::-1]).save(frames / f"{number:03d}.png")
    code, err, _ = run_in_process(["detect", frames, "--out", tmp_path / "out", "--cache-dir", model_cache], capsys)
    assert code == 0, err
    by_image = json.loads((tmp_path / "out" / "detections.json").read_text())
    for number, (result, image_result, (time_, bgr)) in enumerate(zip(clip_results, by_image, decoded)):
        assert result.index == number
        assert result.time == pytest.approx(number / 30, abs=1e-9) == pytest.approx(time_, abs=1e-9)
        assert np.array_equal(result.image, bgr)
        assert [d.to_dict() for d in result.detections] == image_result["detections"]
    # And the face is where it was drawn, in every frame.
    for result, (_, truth) in zip(clip_results, moving_face(FRAMES)):
        assert len(result.detections) == 1 and iou(result.detections[0].box, truth) > 0.7


def test_cli_writes_the_annotated_video_and_json_lines(clip, clip_results, tmp_path, model_cache, capsys):
    out = tmp_path / "out"
    code, err, stdout = run_in_process(["detect", clip, FACE_PHOTOS[0], "--out", out, "--cache-dir", model_cache],
                                       capsys)
    assert code == 0, err
    records = _lines(out / "detections.jsonl")
    assert records[0]["file"] == str(FACE_PHOTOS[0]) and records[0]["detections"][0]["name"] == "face"
    frames = [r for r in records if r["file"] == str(clip)]
    assert [r["frame"] for r in frames] == list(range(FRAMES))
    for record, result in zip(frames, clip_results):
        assert record["time"] == round(result.time, 6)
        assert (record["width"], record["height"]) == (320, 240)
        assert record["detections"] == [d.to_dict() for d in result.detections]
    assert f"{clip}: {FRAMES} frame(s), {FRAMES} with detections" in stdout
    with av.open(str(out / "0000_walk.mp4")) as video:
        stream = video.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (320, 240)
        assert stream.average_rate == 30
        times = [frame.time for frame in video.decode(stream)]
    assert times == pytest.approx([i / 30 for i in range(FRAMES)], abs=1e-6)
    assert (out / "0001_keliamoniz1.jpg").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]    # no temporary left


def test_another_engine_runs_videos_through_the_same_code(clip, clip_results, model_cache):
    """detect_video uses only the Detector's detect_many: the OpenVINO engine
    (on the face model's cached ONNX conversion) gives the same faces, frame by
    frame (boxes within 0.5 px, scores within 1e-3: engine_parity's rule)."""
    from caffessd.inference.engines.openvino_engine import without_openvino_telemetry
    from engine_parity import match_detections

    with without_openvino_telemetry():  # imported as caffessd imports it: this process has run PyAV's threads
        pytest.importorskip("openvino")
    detector = Detector(cache=model_cache, engine="openvino", threads=2)
    assert detector.engine.name == "openvino"
    results = list(detect_video(detector, clip))
    assert [r.index for r in results] == [r.index for r in clip_results]
    for ours, reference in zip(results, clip_results):
        assert match_detections(ours.detections, reference.detections, threshold=0.5)["matched"] == 1


def _slot_starts(frames, rate, fps):
    """Frames that open a new 1/fps slot: floor(i / rate * fps) changes (integer arithmetic)."""
    slots = [(i * fps.numerator * rate.denominator) // (rate.numerator * fps.denominator) for i in range(frames)]
    return [i for i in range(frames) if i == 0 or slots[i] != slots[i - 1]]


def test_every_fps_start_and_duration_choose_the_frames(detector, clip, clip_results):
    by_index = {r.index: r for r in clip_results}

    def chosen(**options):
        found = list(detect_video(detector, clip, **options))
        for result in found:    # the same detections as in the full run
            assert [d.to_dict() for d in result.detections] == [d.to_dict() for d in by_index[result.index].detections]
        return [r.index for r in found]

    assert chosen(every=4) == list(range(0, FRAMES, 4))
    assert chosen(fps=12) == _slot_starts(FRAMES, Fraction(30), Fraction(12)) == [0, 3, 5, 8, 10, 13, 15, 18, 20,
                                                                                   23, 25, 28, 30, 33, 35, 38, 40, 43]
    assert chosen(fps=60) == list(range(FRAMES))    # never more frames than the source has
    # Seeks to the keyframe before 0.5 s, then keeps [0.5 s, 1 s): frames 15..29.
    assert chosen(start="0.5", duration=0.5) == list(range(15, 30))
    assert chosen(start="0:00.9", every=5) == list(range(27, FRAMES, 5))


def test_cli_every_gives_a_video_at_the_sampled_rate(clip, tmp_path, model_cache, capsys):
    out = tmp_path / "out"
    code, err, _ = run_in_process(["detect", clip, "--every", "3", "--out", out, "--cache-dir", model_cache], capsys)
    assert code == 0, err
    assert [r["frame"] for r in _lines(out / "detections.jsonl")] == list(range(0, FRAMES, 3))
    with av.open(str(out / "walk.mp4")) as video:
        stream = video.streams.video[0]
        assert stream.average_rate == 10
        assert len(list(video.decode(stream))) == 15


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    """60 frames, keyframes every 10, faststart MP4 (its index first, so a cut file still opens)."""
    path = write_video(tmp_path_factory.mktemp("intact") / "intact.mp4", [rgb for rgb, _ in moving_face(60, speed=4)],
                       faststart=True)
    return path, {round(t * 30): bgr for t, bgr in decode(path)}


def test_truncated_file_gives_the_frames_before_and_a_count(detector, intact, tmp_path):
    path, frames = intact
    spans = packet_spans(path)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[:spans[40][1] + 10])     # frame 40's packet is cut short
    notes = []
    video = detect_video(detector, cut, on_note=notes.append)
    results = list(video)
    indices = [r.index for r in results]
    assert indices == list(range(len(indices))) and 38 <= len(indices) <= 40
    for result in results:
        assert np.array_equal(result.image, frames[result.index])
    assert video.stats.truncated == 60 - len(results)
    assert any("ends after" in note and "truncated" in note for note in notes), notes


def test_corrupt_middle_gives_the_frames_before_and_after_and_a_count(detector, intact, tmp_path):
    path, frames = intact
    data = bytearray(path.read_bytes())
    pts, position, size = packet_spans(path)[25]
    data[position:position + size] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    video = detect_video(detector, damaged)
    results = list(video)
    indices = [r.index for r in results]
    missing = sorted(set(range(60)) - set(indices))
    assert missing and set(missing) <= set(range(25, 30)), missing    # only frames up to the next keyframe
    assert video.stats.skipped == len(missing) == 60 - len(results)
    assert video.stats.undecodable >= 1
    for result in results:
        if result.index < 25 or result.index >= 30:    # before the damage, and from the next keyframe on
            assert np.array_equal(result.image, frames[result.index]), result.index
            assert result.time == pytest.approx(result.index / 30, abs=1e-9)


def _cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "caffessd", *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kwargs)


@pytest.fixture(scope="module")
def stream_bytes(tmp_path_factory):
    """The walking face as an MPEG-TS stream (what `ffmpeg ... -f mpegts -` sends)."""
    path = write_video(tmp_path_factory.mktemp("ts") / "walk.ts", [rgb for rgb, _ in moving_face(FRAMES)])
    return path.read_bytes()


def test_a_stream_from_a_pipe(stream_bytes, clip_results, tmp_path, model_cache):
    process = _cli("detect", "-", "--out", tmp_path / "out", "--cache-dir", model_cache)
    _, err = process.communicate(stream_bytes, timeout=120)
    assert process.returncode == 0, err
    records = _lines(tmp_path / "out" / "detections.jsonl")
    assert [r["file"] for r in records] == ["-"] * FRAMES
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert [r["time"] for r in records] == [round(r.time, 6) for r in clip_results]
    for record, result in zip(records, clip_results):     # same encoder settings: the same face
        assert iou(record["detections"][0]["box"], result.detections[0].box) > 0.9
    with av.open(str(tmp_path / "out" / "stdin.mp4")) as video:
        assert len(list(video.decode(video=0))) == FRAMES


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_closes_a_playable_video_and_complete_json_lines(signum, status, stream_bytes, tmp_path, model_cache):
    """Half the stream is sent and the pipe held open (a live source): the
    signal stops the run, which closes its outputs and exits 128 + signal."""
    out = tmp_path / "out"
    process = _cli("detect", "-", "--out", out, "--cache-dir", model_cache, "--track")
    process.stdin.write(stream_bytes[:len(stream_bytes) * 2 // 3])
    process.stdin.flush()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_lines_or_none(out / "detections.jsonl")) < 5:
        time.sleep(0.1)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    records = _lines(out / "detections.jsonl")
    assert len(records) >= 5 and [r["frame"] for r in records] == list(range(len(records)))
    assert all(d["track"] == 1 for r in records for d in r["detections"])
    with av.open(str(out / "stdin.mp4")) as video:     # playable, holding exactly the logged frames
        assert len(list(video.decode(video=0))) == len(records)
    assert b"finishing the frames in flight" in err


def _lines_or_none(path):
    try:
        return _lines(path)
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def _serve(payloads):
    """A TCP server sending each payload to one connection in turn, then
    closing: a live stream that drops, comes back once, then is gone."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def run():
        for payload in payloads:
            connection, _ = server.accept()
            connection.sendall(payload)
            connection.close()
        server.close()

    threading.Thread(target=run, daemon=True).start()
    return f"tcp://127.0.0.1:{server.getsockname()[1]}"


def test_a_live_stream_is_reopened_then_given_up(detector, tmp_path):
    from caffessd.video import StreamLost

    first = write_video(tmp_path / "a.ts", [rgb for rgb, _ in moving_face(20)]).read_bytes()
    second = write_video(tmp_path / "b.ts", [rgb for rgb, _ in moving_face(20)][::-1]).read_bytes()
    notes = []
    video = detect_video(detector, _serve([first, second]), reconnect=2, reconnect_delay=0.05, on_note=notes.append)
    assert video.reader.live
    results = []
    with pytest.raises(StreamLost, match="gave up after 2 reconnect attempt"):
        for result in video:
            results.append(result)
    assert [r.index for r in results] == list(range(40))
    assert video.stats.reconnects == 1
    times = [r.time for r in results]
    assert times == sorted(times) and times[20] > times[19]     # time goes on across the reconnect
    assert sum("reconnecting (attempt 1 of 2)" in note for note in notes) == 2
    assert any("reconnecting (attempt 2 of 2)" in note for note in notes)


def test_display_rotation_turns_frames_upright(detector, tmp_path):
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display rotation (PyAV 18 can)")
    upright = [scene([(40 + 4 * i, 30)], size=(240, 320)) for i in range(6)]
    stored = write_video(tmp_path / "phone.mp4", [np.rot90(rgb, -1) for rgb in upright], rotation=90)
    results = list(detect_video(detector, stored))
    assert len(results) == 6
    for result, rgb in zip(results, upright):
        assert result.image.shape == (320, 240, 3)
        assert np.abs(result.image[:, :, ::-1].astype(int) - rgb).mean() < 3


def test_bad_inputs_are_one_line(tmp_path, model_cache, capsys):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello\n")
    code, err, _ = run_in_process(["detect", not_video, "--out", tmp_path / "o1", "--cache-dir", model_cache], capsys)
    assert code == 1 and err.strip().splitlines()[-1] == \
        f"caffessd: error: {not_video}: cannot open as a video (invalid data found when processing input)"
    assert not (tmp_path / "o1").exists() or not list((tmp_path / "o1").iterdir())
    code, err, _ = run_in_process(["detect", tmp_path / "gone.mp4", "--cache-dir", model_cache], capsys)
    assert code == 1 and f"{tmp_path / 'gone.mp4'}: no such file" in err and "Traceback" not in err
    sound = tmp_path / "sound.mkv"
    with av.open(str(sound), "w") as output:
        stream = output.add_stream("mp2", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), format="s16", layout="mono")
        frame.sample_rate = 44100
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            output.mux(packet)
    code, err, _ = run_in_process(["detect", sound, "--out", tmp_path / "o2", "--cache-dir", model_cache], capsys)
    assert code == 1 and f"{sound}: has no video stream" in err
    for args, message in [(["--every", "2", FACE_PHOTOS[0]], "--every apply to videos"),
                          (["--every", "2", "--fps", "5", not_video], "give one of them"),
                          (["--count", "1,2,3", not_video], "--count takes a line as X0,Y0,X1,Y1"),
                          (["--start", "soon", not_video], "--start takes seconds"),
                          (["-", "-"], "stdin can be read once")]:
        code, err, _ = run_in_process(["detect", *args, "--cache-dir", model_cache], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)


def test_docs_describe_every_video_option():
    from caffessd.commands.detect_cmd import command

    doc = (ROOT / "docs" / "video.md").read_text()
    for name in ("--every", "--fps", "--start", "--duration", "--track", "--count", "--reconnect", "--no-video"):
        assert name in doc and any(name in param.opts + param.secondary_opts for param in command.params), name
