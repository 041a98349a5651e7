"""Detection on video files, network streams, a pipe and cameras (PyAV),
with tracking (SORT) and line counting: `caffessd detect VIDEO`, or
`Detector.detect_video(source)` in Python. Needs the `video` extra (PyAV).

Modules: source (decoding), sampling (which frames), background (the decode
thread), pipeline (detection, tracking, counting), tracking, counting,
sink (H.264 output), outputs (writer thread, JSON Lines), stopping (signals),
inputs (detect's arguments), run (one video for the CLI)."""
from caffessd.video.counting import CountingLine, LineCounter
from caffessd.video.pipeline import FrameResult, VideoDetection
from caffessd.video.sampling import FrameSampler
from caffessd.video.source import Frame, ReadStats, SourceSpec, StreamLost, VideoReader, is_video_source
from caffessd.video.tracking import Sort, TrackedDetection, linear_assignment

__all__ = ["CountingLine", "Frame", "FrameResult", "FrameSampler", "LineCounter", "ReadStats", "Sort",
           "SourceSpec", "StreamLost", "TrackedDetection", "VideoDetection", "VideoReader", "is_video_source",
           "linear_assignment"]
