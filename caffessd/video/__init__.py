"""Detection on video files, network streams, a pipe and cameras (PyAV),
with tracking (SORT) and line counting: `caffessd detect VIDEO`, or
`detect_video(detector, source)` in Python. Needs the `video` extra (PyAV).

Modules: source (decoding), sampling (which frames), background (the decode
thread), pipeline (detection, tracking, counting), tracking, counting,
sink (H.264 output), outputs (writer thread, JSON Lines), stopping (signals),
inputs (detect's arguments), run (one video for the CLI).

May import: util, the core, image/ and inference/ (the Detector's public
methods only: detect_many and the Detection type, so any engine behind a
Detector runs videos). PyAV only inside functions. Never eval/, train/ or
commands/.

    from caffessd import Detector, detect_video
    for frame in detect_video(Detector(), "clip.mp4", track=True):
        print(frame.index, frame.time, [(d.name, d.track, d.box) for d in frame.detections])
"""
from caffessd.video.counting import CountingLine, LineCounter
from caffessd.video.pipeline import FrameResult, VideoDetection, detect_video
from caffessd.video.sampling import FrameSampler
from caffessd.video.source import Frame, ReadStats, SourceSpec, StreamLost, VideoReader, is_video_source
from caffessd.video.tracking import Sort, TrackedDetection, linear_assignment

__all__ = ["CountingLine", "Frame", "FrameResult", "FrameSampler", "LineCounter", "ReadStats", "Sort",
           "SourceSpec", "StreamLost", "TrackedDetection", "VideoDetection", "VideoReader", "detect_video",
           "is_video_source", "linear_assignment"]
