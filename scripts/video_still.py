#!/usr/bin/env python3
"""The still of docs/video.md and the README: a generated clip of two faces
(crops of the bundled photos) walking past each other, run through
`caffessd detect --track --count`, and one frame of the annotated video it
writes, after both faces crossed the counting line.

    python scripts/video_still.py                      # writes docs/images/video-tracking.jpg
    python scripts/video_still.py --keep clip-folder   # also keeps the clip and detect's outputs
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from caffessd.resources import bundled  # noqa: E402

SIZE = (640, 360)
FRAMES = 90


def make_clip(path: Path) -> Path:
    import av
    from PIL import Image, ImageFilter

    # The first photo's beach, blurred out of recognition: a backdrop with no face in it.
    photo = Image.open(bundled("yufacedetectnet", "keliamoniz1.jpg")).convert("RGB")
    background = photo.crop((0, 0, 240, 135)).resize(SIZE, Image.BICUBIC).filter(ImageFilter.GaussianBlur(8))
    faces = [Image.open(bundled("yufacedetectnet", name)).convert("RGB").crop(box).resize(size)
             for name, box, size in (("keliamoniz1.jpg", (257, 100, 497, 414), (120, 157)),
                                     ("keliamoniz2.jpg", (180, 70, 340, 330), (96, 156)))]
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for index in range(FRAMES):
            frame = background.copy()
            frame.paste(faces[0], (10 + 5 * index, 40))
            frame.paste(faces[1], (SIZE[0] - 110 - 5 * index, 170))
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "video-tracking.jpg"))
    parser.add_argument("--frame", type=int, default=70, help="which frame of the annotated video")
    parser.add_argument("--keep", help="folder to keep the clip and detect's outputs in")
    args = parser.parse_args()

    import av

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        clip = make_clip(work / "crossing.mp4")
        command = [sys.executable, "-m", "caffessd", "detect", str(clip), "--track", "--count",
                   f"{SIZE[0] // 2},0,{SIZE[0] // 2},{SIZE[1]}", "--out", str(work / "detections")]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        print(done.stdout, end="")
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        with av.open(str(work / "detections" / "crossing.mp4")) as video:
            for index, frame in enumerate(video.decode(video=0)):
                if index == args.frame:
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    frame.to_image().save(args.out, quality=88)
                    print(f"wrote {args.out} (frame {index} of the annotated video)")
                    break
    return 0


if __name__ == "__main__":
    sys.exit(main())
