"""detect's arguments sorted into images and videos, in the order given.

A URL, `-` (stdin), /dev/videoN or a file with a video suffix is a video;
a folder gives its images and its videos (sorted by name); a glob pattern
what it matches. Anything else is an image, as detect always took it."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from caffessd.errors import FormatError
from caffessd.image.preprocess import IMAGE_SUFFIXES, expand_image_args
from caffessd.video.source import VIDEO_SUFFIXES, is_video_source

IMAGE, VIDEO = "image", "video"


def expand_inputs(args: Sequence[str], missing: Optional[list] = None) -> List[Tuple[str, object]]:
    """[(IMAGE, Path) or (VIDEO, str), ...] for detect's arguments. A name that
    matches nothing is an error naming it; with a `missing` list the errors are
    appended there and the other names still count (detect runs the rest)."""
    found: List[Tuple[str, object]] = []
    for arg in args:
        try:
            found.extend(_expand_one(arg))
        except FormatError as error:
            if missing is None:
                raise
            missing.append(error)
    return found


def _expand_one(arg: str) -> List[Tuple[str, object]]:
    path = Path(arg)
    if is_video_source(arg) and not path.is_dir() and (not _glob(arg) or path.exists()):
        return [(VIDEO, arg)]
    if path.is_dir():
        media = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        return [_kind(p) for p in media]
    if _glob(arg) and not path.exists():
        import glob

        matches = sorted(Path(p) for p in glob.glob(arg, recursive=True))
        if not matches:
            raise FormatError(arg, "pattern matches no file")
        return [_kind(p) for p in matches]
    return [(IMAGE, p) for p in expand_image_args([arg])]


def _glob(arg: str) -> bool:
    return any(ch in arg for ch in "*?[")


def _kind(path: Path) -> Tuple[str, object]:
    return (VIDEO, str(path)) if path.suffix.lower() in VIDEO_SUFFIXES else (IMAGE, path)
