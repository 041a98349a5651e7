"""Test videos made with PyAV: crops of the bundled photo (a face) moving over
a plain background, so every frame's face box is known.

The face in models/yufacedetectnet/keliamoniz1.jpg is at about (287, 130,
467, 384); the sprite is the photo's (257, 100, 497, 414) crop at a third of
its size (80 x 105), so the face sits at SPRITE_FACE inside it and the face
detector finds it at every position (score > 0.99)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

import numpy as np
from PIL import Image

from conftest import FACE_PHOTOS

SIZE = (320, 240)
SPRITE_SIZE = (80, 105)
SPRITE_FACE = (10, 10, 70, 95)      # the face's box inside the sprite (pixels)
BACKGROUND = 90


def face_sprite() -> Image.Image:
    return Image.open(FACE_PHOTOS[0]).convert("RGB").crop((257, 100, 497, 414)).resize(SPRITE_SIZE)


def face_box(x: int, y: int) -> Tuple[float, float, float, float]:
    """Where the face is when the sprite's top-left corner is at (x, y)."""
    x0, y0, x1, y1 = SPRITE_FACE
    return (x + x0, y + y0, x + x1, y + y1)


def scene(sprites: Iterable[Tuple[int, int]], occluders: Iterable[Tuple[int, int, int, int]] = (),
          size=SIZE) -> np.ndarray:
    """An RGB frame: sprites pasted in order (later ones on top), then grey occluders."""
    image = Image.new("RGB", size, (BACKGROUND,) * 3)
    sprite = face_sprite()
    for x, y in sprites:
        image.paste(sprite, (x, y))
    frame = np.array(image)
    for x0, y0, x1, y1 in occluders:
        frame[max(0, y0):y1, max(0, x0):x1] = 128
    return frame


def moving_face(frames: int = 45, speed: int = 5, y: int = 60) -> List[Tuple[np.ndarray, tuple]]:
    """A face crossing the picture left to right: (RGB frame, face box) per frame."""
    return [(scene([(5 + speed * i, y)]), face_box(5 + speed * i, y)) for i in range(frames)]


def write_video(path, frames: Iterable[np.ndarray], rate=30, container: Optional[str] = None,
                x264: str = "keyint=10:min-keyint=10:bframes=0:scenecut=0", faststart: bool = False,
                rotation: Optional[int] = None) -> Path:
    """Encode RGB frames as H.264 (a keyframe every 10 frames, no B-frames,
    so damage heals at the next keyframe); `container` defaults to the suffix's."""
    import av

    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=options) as output:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = output.add_stream("libx264", rate=Fraction(rate))
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "18", "preset": "veryfast", "x264-params": x264}
                if rotation:
                    stream.set_display_rotation(rotation)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return Path(path)


def decode(path) -> List[Tuple[float, np.ndarray]]:
    """(time, BGR frame) for every frame, by a plain PyAV loop (no caffessd)."""
    import av

    with av.open(str(path)) as video:
        stream = video.streams.video[0]
        start = stream.start_time or 0
        return [(float((frame.pts - start) * frame.time_base), frame.to_ndarray(format="bgr24"))
                for frame in video.decode(stream)]


def packet_spans(path) -> List[Tuple[int, int, int]]:
    """(pts, byte offset, size) of each video packet in the file, in file order."""
    import av

    with av.open(str(path)) as video:
        return [(packet.pts, packet.pos, packet.size) for packet in video.demux(video=0)
                if packet.size and packet.pos is not None and packet.pos >= 0]


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
