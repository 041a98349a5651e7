"""`caffessd detect` on videos: each source in turn through the pipeline, its
frames to the writer (annotated video, JSON Lines), a progress line, notes
about lost data, and a summary. The click command stays a thin shell."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from caffessd.errors import FormatError
from caffessd.util.progress import Progress
from caffessd.video.outputs import FrameWriter, JsonLines
from caffessd.video.pipeline import VideoDetection
from caffessd.video.source import SourceSpec, StreamLost


@dataclass
class VideoOutcome:
    """What one source gave: frames written, the annotated video, lost data, counts."""

    source: str
    frames: int = 0
    with_detections: int = 0
    video: Optional[Path] = None
    skipped: int = 0
    truncated: int = 0
    tracks: Optional[int] = None
    counts: Optional[dict] = None
    error: Optional[str] = None


@dataclass
class VideoJob:
    """Options shared by every video of one detect call (see VideoDetection)."""

    options: dict = field(default_factory=dict)
    write_video: bool = True
    show_progress: bool = True


def run_video(detector, source: str, video_path: Optional[Path], json_lines: Optional[JsonLines], job: VideoJob,
              stop, say: Callable[[str], None]) -> VideoOutcome:
    """Detect on one source and write its outputs. A source that cannot be
    opened raises FormatError before anything is written; a live source lost
    for good keeps what was written (closed properly) and reports the error
    in the outcome."""
    video = VideoDetection(detector, source, stop=stop, on_note=lambda text: say(f"caffessd: note: {text}"),
                           **job.options)
    outcome = VideoOutcome(video.source)
    writer = FrameWriter(video.source, video_path if job.write_video else None, json_lines, video.rate, video.lines)
    progress = Progress(video.expected_frames, f"detecting {video.source}", unit="frames", enabled=job.show_progress)
    last = None
    try:
        for result in video:
            writer.submit(result)
            outcome.frames += 1
            outcome.with_detections += bool(result.detections)
            last = result
            skipped = video.stats.skipped
            progress.update(extra=f"{skipped} corrupt or missing" if skipped else None)
    except StreamLost as exc:
        outcome.error = str(exc)
    except BaseException:
        writer.abort()
        progress.close()
        raise
    progress.close()
    outcome.video = writer.close()
    outcome.skipped, outcome.truncated = video.stats.skipped, video.stats.truncated
    if video.tracker is not None:
        outcome.tracks = video.tracker.reported
    if last is not None and last.counts is not None:
        outcome.counts = last.counts
    if outcome.skipped:
        say(f"caffessd: note: {video.source}: {outcome.skipped} corrupt or missing frame(s) skipped "
            f"({video.stats.undecodable} rejected by the decoder)")
    return outcome


def describe(outcome: VideoOutcome) -> List[str]:
    """The summary lines printed for a video (stdout)."""
    text = f"{outcome.source}: {outcome.frames} frame(s), {outcome.with_detections} with detections"
    if outcome.tracks is not None:
        text += f", {outcome.tracks} track(s)"
    lines = [text]
    for line, per_class in (outcome.counts or {}).items():
        counted = ", ".join(f"{name} in {c['in']} out {c['out']}" for name, c in per_class.items()) or "nothing"
        lines.append(f"  crossing {line}: {counted}")
    return lines


def video_target(out_dir: Path, index: int, source: str, total: int) -> Path:
    """OUT/STEM.mp4, or OUT/NNNN_STEM.mp4 among several inputs (as detect names images)."""
    stem = SourceSpec.parse(source).stem
    return Path(out_dir) / (f"{stem}.mp4" if total == 1 else f"{index:04d}_{stem}.mp4")


def check_sources(sources: List[str]) -> None:
    """Refuse what cannot work before any model loads: stdin twice."""
    if sum(1 for s in sources if s == "-") > 1:
        raise FormatError("-", "stdin can be read once: give '-' at most once")
