"""detect's arguments sorted into images and videos, in the order given.

A URL, `-` (stdin), /dev/videoN or a file with a video suffix is a video;
a folder gives its images and its videos (sorted by name); a glob pattern
what it matches. Anything else is an image, as detect always took it."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

from caffessd.errors import FormatError
from caffessd.image.preprocess import IMAGE_SUFFIXES, expand_image_args
from caffessd.video.source import VIDEO_SUFFIXES, is_video_source

IMAGE, VIDEO = "image", "video"


def expand_inputs(args: Sequence[str]) -> List[Tuple[str, object]]:
    """[(IMAGE, Path) or (VIDEO, str), ...] for detect's arguments."""
    found: List[Tuple[str, object]] = []
    for arg in args:
        path = Path(arg)
        if is_video_source(arg) and not path.is_dir():
            if not _glob(arg) or path.exists():
                found.append((VIDEO, arg))
                continue
        if path.is_dir():
            media = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            found.extend(_kind(p) for p in media)
        elif _glob(arg) and not path.exists():
            import glob

            matches = sorted(Path(p) for p in glob.glob(arg, recursive=True))
            if not matches:
                raise FormatError(arg, "pattern matches no file")
            found.extend(_kind(p) for p in matches)
        else:
            found.extend((IMAGE, p) for p in expand_image_args([arg]))
    return found


def _glob(arg: str) -> bool:
    return any(ch in arg for ch in "*?[")


def _kind(path: Path) -> Tuple[str, object]:
    return (VIDEO, str(path)) if path.suffix.lower() in VIDEO_SUFFIXES else (IMAGE, path)
