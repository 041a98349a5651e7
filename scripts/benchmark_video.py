#!/usr/bin/env python3
"""Video detection speed and memory, all speed figures from one process with
the same thread count:

1. Frames/s of caffessd on a generated 720p H.264 video (faces walking over a
   textured background) against a plain OpenCV loop in the same run
   (cv2.VideoCapture + cv2.dnn.blobFromImage + net.forward, the loop every
   MobileNet-SSD video demo runs), for MobileNet-SSD 300 (gen-model, random
   weights) and the embedded face detector:
   - "detect_video": Detector.detect_video (decode thread, pipelined
     preprocessing and inference), detections only, as the OpenCV loop;
   - "detect, annotated": what `caffessd detect video.mp4` does (also draws,
     encodes H.264 and writes JSON Lines on the writer thread), against the
     OpenCV loop that also draws with cv2.rectangle and writes with
     cv2.VideoWriter (MPEG-4 part 2, OpenCV's wheels carry no H.264 encoder).
   Rounds alternate between the contenders, so load drift on a shared
   machine hits both; CPU ms per frame (all threads) is printed beside
   frames/s: it barely moves when other jobs take the cores.
2. Peak RSS of `caffessd detect` (fresh process, face model, annotated video
   written) over a short and a 10x longer video: the pipeline holds a bounded
   number of frames, so the peak must not grow with the length.
3. The CPU's instruction sets (AVX2, AVX-512, VNNI, AMX) and the thread count.

    nice -n 10 python scripts/benchmark_video.py                      # 10 s video, RSS on 10 s vs 100 s
    python scripts/benchmark_video.py --seconds 20 --rounds 3 --short 60 --long 600   # the 1 vs 10 minute figure

Needs PyAV (the video extra) and OpenCV 4.x (the test extra). Minutes on a busy machine.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from caffessd.image.preprocess import Preprocessing  # noqa: E402
from caffessd.resources import bundled  # noqa: E402
from caffessd.inference.detector import Detector, default_model  # noqa: E402
from caffessd.video import detect_video  # noqa: E402
from benchmark_cpu import cpu_report  # noqa: E402

MOBILENET_PREP = Preprocessing(width=300, height=300, mean=(127.5, 127.5, 127.5), scale=0.007843)
SIZE = (1280, 720)
RATE = 30


def make_video(path: Path, seconds: float, preset: str = "veryfast") -> Path:
    """720p H.264 at 30 fps: two face crops of the bundled photos walking over
    a slowly panning textured background (so the encoder and decoder work as
    on camera footage, and the face model finds faces)."""
    import av
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    width, height = SIZE
    noise = rng.integers(0, 255, (height // 8 + 1, (width + 400) // 8 + 1, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(noise).resize((width + 400, height), Image.BICUBIC)
                         .filter(ImageFilter.GaussianBlur(3)))
    faces = [Image.open(bundled("yufacedetectnet", name)).convert("RGB").crop(box).resize(size)
             for name, box, size in (("keliamoniz1.jpg", (250, 90, 510, 420), (200, 254)),
                                     ("keliamoniz2.jpg", (180, 70, 340, 330), (140, 228)))]
    frames = round(seconds * RATE)
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "crf": "23"}
        for index in range(frames):
            shift = (index * 2) % 400
            image = Image.fromarray(np.ascontiguousarray(texture[:, shift:shift + width]))
            image.paste(faces[0], ((index * 7) % (width - 200), 120))
            image.paste(faces[1], (width - 140 - (index * 5) % (width - 140), 380))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def gen_mobilenet(folder: Path):
    out = folder / "mnv1"
    subprocess.run([sys.executable, "-m", "caffessd", "gen-model", "--backbone", "mnv1", "--bn", "none", "--stage",
                    "deploy", "--init-weights", str(out / "weights.caffemodel"), "-o", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    return out / "deploy.prototxt", out / "weights.caffemodel"


def timed(run) -> tuple:
    """(frames/s, CPU ms per frame over all threads) of run() -> frame count."""
    cpu, start = time.process_time(), time.perf_counter()
    count = run()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return count / wall, cpu * 1000.0 / count


def caffessd_frames(detector, video: Path, streams: int = 1):
    return lambda: sum(1 for _ in detect_video(detector, video, streams=streams))


def caffessd_annotated(detector, video: Path, work: Path):
    """What `caffessd detect VIDEO` runs per video (caffessd.video.run), progress line aside."""
    from caffessd.video.outputs import JsonLines
    from caffessd.video.run import VideoJob, run_video

    def run():
        lines = JsonLines(work / "bench.jsonl")
        try:
            outcome = run_video(detector, str(video), work / "bench.mp4", lines, VideoJob(show_progress=False), None,
                                lambda text: None)
        finally:
            lines.close()
        return outcome.frames
    return run


def opencv_loop(net, video: Path, prep: Preprocessing, annotate: bool = False, work: Path = None):
    import cv2

    def run():
        capture = cv2.VideoCapture(str(video))
        writer = None
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            net.setInput(cv2.dnn.blobFromImage(frame, prep.scale, (prep.width, prep.height), prep.mean))
            rows = net.forward().reshape(-1, 7)
            if annotate:
                if writer is None:
                    writer = cv2.VideoWriter(str(work / "opencv.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), RATE,
                                             (frame.shape[1], frame.shape[0]))
                height, width = frame.shape[:2]
                for _, label, score, x0, y0, x1, y1 in rows[rows[:, 2] >= 0.5]:
                    cv2.rectangle(frame, (int(x0 * width), int(y0 * height)), (int(x1 * width), int(y1 * height)),
                                  (0, 255, 0), 2)
                    cv2.putText(frame, f"{int(label)} {score:.2f}", (int(x0 * width), int(y0 * height) - 4),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
                writer.write(frame)
            count += 1
        capture.release()
        if writer is not None:
            writer.release()
        return count
    return run


def contenders(detector, single, streams, net, prep, video: Path, work: Path) -> dict:
    return {
        "caffessd detect_video": caffessd_frames(detector, video),
        f"  --streams {streams} --threads 1": caffessd_frames(single, video, streams),
        "OpenCV loop": opencv_loop(net, video, prep),
        "caffessd detect, annotated": caffessd_annotated(detector, video, work),
        "OpenCV loop + VideoWriter": opencv_loop(net, video, prep, annotate=True, work=work),
    }


def speed(name, make_detector, threads, net, prep, video: Path, warmup: Path, work: Path, rounds: int) -> None:
    """`make_detector(threads)`: the contenders are a Detector with `threads`
    onnxruntime threads (detect's defaults), one with 1 thread running
    `threads` streams (detect --streams N --threads 1), and OpenCV with
    `threads` threads."""
    detector, single = make_detector(threads), make_detector(1)
    for run in contenders(detector, single, threads, net, prep, warmup, work).values():   # sessions, first decode
        run()
    contenders_ = contenders(detector, single, threads, net, prep, video, work)
    results = {label: [] for label in contenders_}
    for _ in range(rounds):
        for label, run in contenders_.items():
            results[label].append(timed(run))
    best = {label: max(samples) for label, samples in results.items()}   # the least disturbed round
    print(f"{name} (best of {rounds} alternating rounds):")
    for ours, theirs in (("caffessd detect_video", "OpenCV loop"),
                         (f"  --streams {threads} --threads 1", "OpenCV loop"),
                         ("caffessd detect, annotated", "OpenCV loop + VideoWriter")):
        (rate, cpu), (peer_rate, peer_cpu) = best[ours], best[theirs]
        print(f"  {ours:28s} {rate:6.1f} frames/s, CPU {cpu:6.1f} ms/frame")
        print(f"  {theirs:28s} {peer_rate:6.1f} frames/s, CPU {peer_cpu:6.1f} ms/frame   "
              f"ratio {rate / peer_rate:.2f}x frames/s, {peer_cpu / cpu:.2f}x less CPU")


# The CLI in a fresh interpreter, printing its peak RSS (VmHWM) on exit.
PEAK_RSS_RUNNER = ("import atexit, sys\n"
                   f"sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
                   "from benchmark_train import peak_rss_mb\n"
                   "atexit.register(lambda: print('peak_rss_mb', peak_rss_mb(), file=sys.stderr))\n"
                   "from caffessd.cli import main\n"
                   "main(sys.argv[1:])\n")


def detect_peak_rss_mb(video: Path, work: Path) -> tuple:
    """(peak RSS MB, seconds) of `caffessd detect VIDEO` with the annotated video."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_RSS_RUNNER, "detect", str(video), "--out",
                           str(work / f"out-{video.stem}"), "--cache-dir", str(work / "cache")],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    peak = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("peak_rss_mb")]
    return float(peak[-1]), time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of the speed test video")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                        help="onnxruntime intra-op threads and cv2.setNumThreads")
    parser.add_argument("--short", type=float, default=10, help="seconds of the short video (memory)")
    parser.add_argument("--long", type=float, default=100, help="seconds of the long video (memory)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["mobilenet", "face", "memory"])
    args = parser.parse_args()

    import av
    import cv2

    print("CPU:", cpu_report())
    print(f"threads: {args.threads}; onnxruntime and OpenCV {cv2.__version__}; PyAV {av.__version__} "
          f"(FFmpeg {'.'.join(map(str, av.library_versions['libavcodec']))} libavcodec)")
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video = make_video(work / "walk720.mp4", args.seconds)
        warmup = make_video(work / "warmup.mp4", 1)
        print(f"video: {SIZE[0]}x{SIZE[1]} H.264, {RATE} fps, {round(args.seconds * RATE)} frames")
        if "mobilenet" not in args.skip:
            prototxt, weights = gen_mobilenet(work)
            net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
            speed("MobileNet-SSD 300 (random weights)",
                  lambda threads: Detector(prototxt, weights, cache=work / "cache", threads=threads,
                                           preprocessing=Preprocessing(**vars(MOBILENET_PREP))),
                  args.threads, net, MOBILENET_PREP, video, warmup, work, args.rounds)
        if "face" not in args.skip:
            spec = default_model()
            net = cv2.dnn.readNetFromCaffe(str(spec.prototxt), str(spec.caffemodel))
            speed("face detector (YuFaceDetectNet 320x240)",
                  lambda threads: Detector(cache=work / "cache", threads=threads),
                  args.threads, net, spec.preprocessing, video, warmup, work, args.rounds)
        if "memory" not in args.skip:
            print("memory: peak RSS of `caffessd detect VIDEO` (face model, annotated video written), fresh process")
            peaks = []
            for seconds in (args.short, args.long):
                clip = make_video(work / f"memory-{seconds:g}s.mp4", seconds, preset="ultrafast")
                peak, took = detect_peak_rss_mb(clip, work)
                peaks.append(peak)
                print(f"  {seconds:g} s video ({round(seconds * RATE)} frames): peak RSS {peak:.0f} MB "
                      f"({took:.0f} s)")
                clip.unlink()
            print(f"  long / short: {peaks[1] / peaks[0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
