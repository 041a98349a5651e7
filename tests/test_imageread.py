"""Images are read as cv2.imread(path, IMREAD_COLOR) reads them (OpenCV 4.x is
the reference): each kind of file is made here, read both ways, and compared.

Tolerances: identical pixels for every kind but 16-bit colour TIFF and PPM,
where one side rounds (OpenCV v/257 for TIFF, Pillow v*255/65535 for PPM) and
the other keeps the high byte: at most 1 level apart.
"""
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from caffessd.errors import FormatError
from caffessd.image.read import (DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, decode_image_bytes, max_pixels_limit, orient,
                                read_image)

RNG = np.random.default_rng(15)
BASE = RNG.integers(0, 256, (23, 37, 3), dtype=np.uint8)          # odd sizes: rotations show
ALPHA = RNG.integers(0, 256, (23, 37), dtype=np.uint8)
INK = RNG.integers(0, 256, (23, 37, 4), dtype=np.uint8)
DEEP = RNG.integers(0, 65536, (23, 37, 3), dtype=np.uint16)
DEEP[0, :6, 0] = [0, 255, 256, 32767, 32768, 65535]               # byte boundaries


def _pil(mode_array, mode=None):
    return Image.fromarray(mode_array, mode) if mode else Image.fromarray(mode_array)


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


# name -> (writer(path), tolerance in grey levels)
KINDS = {
    "rgb.png": (lambda p: _pil(BASE).save(p), 0),
    "rgb.jpg": (lambda p: _pil(BASE).save(p, quality=90), 0),
    "grey.png": (lambda p: _pil(BASE[:, :, 0]).save(p), 0),
    "grey.jpg": (lambda p: _pil(BASE[:, :, 0]).save(p, quality=90), 0),
    "bilevel.png": (lambda p: _pil(BASE[:, :, 0] > 128).save(p), 0),
    "palette.png": (lambda p: _pil(BASE).quantize(50).save(p), 0),
    "palette.gif": (lambda p: _pil(BASE).quantize(50).save(p), 0),
    "palette.bmp": (lambda p: _pil(BASE).quantize(16).save(p), 0),
    "palette-transparent.png": (lambda p: _pil(BASE).quantize(50).save(p, transparency=3), 0),
    "rgba.png": (lambda p: _pil(np.dstack([BASE, ALPHA]), "RGBA").save(p), 0),
    "rgba.webp": (lambda p: _pil(np.dstack([BASE, ALPHA]), "RGBA").save(p, lossless=True), 0),
    "rgba.tif": (lambda p: _pil(np.dstack([BASE, ALPHA]), "RGBA").save(p), 0),   # premultiplied by libtiff
    "grey-alpha.png": (lambda p: _pil(np.dstack([BASE[:, :, 0], ALPHA]), "LA").save(p), 0),
    "grey-alpha.tif": (lambda p: _pil(np.dstack([BASE[:, :, 0], ALPHA]), "LA").save(p), 0),
    "rgb16.png": (lambda p: cv2.imwrite(str(p), DEEP), 0),
    "rgba16.png": (lambda p: cv2.imwrite(str(p), np.dstack([DEEP, DEEP[:, :, :1]])), 0),
    "grey16.png": (lambda p: cv2.imwrite(str(p), DEEP[:, :, 0]), 0),
    "grey16.tif": (lambda p: cv2.imwrite(str(p), DEEP[:, :, 0]), 0),
    "grey16.pgm": (lambda p: cv2.imwrite(str(p), DEEP[:, :, 0]), 0),
    "rgb16.ppm": (lambda p: cv2.imwrite(str(p), DEEP), 1),
    "rgb16.tif": (lambda p: cv2.imwrite(str(p), DEEP), 1),
    "cmyk.jpg": (lambda p: _pil(INK, "CMYK").save(p, quality=95), 0),
    "cmyk.tif": (lambda p: _pil(INK, "CMYK").save(p), 0),
    **{f"orientation{o}.jpg": ((lambda o: lambda p: _pil(BASE).save(p, exif=_exif(o), quality=90))(o), 0)
       for o in range(1, 9)},
    **{f"orientation{o}.png": ((lambda o: lambda p: _pil(BASE).save(p, exif=_exif(o)))(o), 0) for o in range(1, 9)},
    **{f"orientation{o}.webp": ((lambda o: lambda p: _pil(BASE).save(p, exif=_exif(o), lossless=True))(o), 0)
       for o in (3, 6, 8)},
    # OpenCV 4.14 fails on TIFF orientations 5-8 ("Internal imread issue"), so only 2-4 are compared.
    **{f"orientation{o}.tif": ((lambda o: lambda p: _pil(BASE).save(p, exif=_exif(o)))(o), 0) for o in (2, 3, 4)},
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_reads_like_cv2_imread(tmp_path, name):
    write, tolerance = KINDS[name]
    path = tmp_path / name
    write(path)
    theirs = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert theirs is not None, f"OpenCV cannot read {name}"
    ours = read_image(path)
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape, (ours.shape, theirs.shape)
    difference = np.abs(ours.astype(int) - theirs.astype(int)).max()
    assert difference <= tolerance, f"{name}: up to {difference} levels from cv2.imread"


@pytest.mark.parametrize("name", ["cmyk.jpg", "rgb16.png", "rgba.tif", "palette.gif", "orientation6.jpg"])
def test_bytes_decode_like_cv2_imdecode(tmp_path, name):
    write, tolerance = KINDS[name]
    write(tmp_path / name)
    data = (tmp_path / name).read_bytes()
    theirs = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(decode_image_bytes(data, "key").astype(int) - theirs).max() <= tolerance


def test_bytes_bomb_names_the_record():
    with pytest.raises(FormatError, match="record-7: image is 20000x12000"):
        decode_image_bytes(bomb_png(20000, 12000), "record-7")


def test_sixteen_bit_colour_tiff_is_within_one_level_not_more(tmp_path):
    # The one inexact case: show it is the rounding and nothing else.
    path = tmp_path / "rgb16.tif"
    cv2.imwrite(str(path), DEEP)
    ours, theirs = read_image(path).astype(int), cv2.imread(str(path)).astype(int)
    assert np.array_equal(ours, DEEP >> 8)
    assert np.array_equal(theirs, np.rint(DEEP / 257.0))
    assert 0 < np.abs(ours - theirs).max() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_turns_the_image_as_displayed(orientation):
    # A 2x3 image with distinct pixels; expected layouts written out by hand
    # from the EXIF definitions (row 0 / column 0 of the stored image).
    stored = np.arange(6).reshape(2, 3, 1)
    expected = {1: [[0, 1, 2], [3, 4, 5]], 2: [[2, 1, 0], [5, 4, 3]], 3: [[5, 4, 3], [2, 1, 0]],
                4: [[3, 4, 5], [0, 1, 2]], 5: [[0, 3], [1, 4], [2, 5]], 6: [[3, 0], [4, 1], [5, 2]],
                7: [[5, 2], [4, 1], [3, 0]], 8: [[2, 5], [1, 4], [0, 3]]}[orientation]
    assert orient(stored, orientation)[:, :, 0].tolist() == expected


def test_pixel_limit_refuses_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    _pil(BASE).save(path)
    with pytest.raises(FormatError, match=r"37x23 = 851 pixels, more than the limit.*850 pixels.*--max-pixels"):
        read_image(path, max_pixels=850)
    assert read_image(path, max_pixels=851).shape == (23, 37, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "850")
    with pytest.raises(FormatError, match="more than the limit"):
        read_image(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")
    assert max_pixels_limit() is None and read_image(path).shape == (23, 37, 3)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    assert max_pixels_limit() == DEFAULT_MAX_PIXELS


def bomb_png(width, height) -> bytes:
    """A valid PNG header claiming width x height grey pixels, with a tiny body."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [(20000, 12000), (100000, 100000)])
def test_decompression_bombs_are_format_errors_without_warnings(tmp_path, width, height):
    # 240 MP is over caffessd's limit only; 10 GP is over Pillow's own too.
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(width, height))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")     # a DecompressionBombWarning would fail the test
        with pytest.raises(FormatError, match="bomb.png.*(more than the limit|too large to decode).*--max-pixels"):
            read_image(path)


def test_detect_reports_a_bomb_in_one_line_and_processes_the_rest(tmp_path, run_cli, face_photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a_bomb.png").write_bytes(bomb_png(30000, 30000))
    (folder / "b_face.jpg").write_bytes(face_photos[0].read_bytes())
    result = run_cli("detect", folder, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("caffessd: error:")]
    assert len(errors) == 1 and "a_bomb.png" in errors[0] and "pixels" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    assert "b_face.jpg: 1 detection(s)" in result.stdout
    # The limit is an option too: a small limit refuses the face photo as well.
    result = run_cli("detect", folder / "b_face.jpg", "--max-pixels", 1000, "--out", tmp_path / "out2",
                     "--cache-dir", tmp_path / "cache")
    assert result.returncode == 1 and "more than the limit" in result.stderr and "Traceback" not in result.stderr
