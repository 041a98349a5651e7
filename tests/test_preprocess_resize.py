"""caffessd.image.preprocess.resize_linear against OpenCV's cv2.resize INTER_LINEAR,
and make_blob against cv2.dnn.blobFromImage (the transform Caffe SSD's test
nets and OpenCV users apply). Tolerance: the issue allows 1 grey level; the
fixed-point copy is expected to be exact, which these tests require."""
import cv2
import numpy as np
import pytest

from caffessd.image.preprocess import Preprocessing, load_image, make_blob, resize_linear

SOURCES = [(640, 480), (500, 375), (33, 17), (7, 5), (1, 1), (3000, 40), (2, 900), (300, 300), (1023, 767)]
TARGETS = [(300, 300), (320, 240), (640, 640), (13, 7), (1, 1), (512, 288)]


def _targets(src_w, src_h):
    # Fixed sizes plus the exact 2x up and 2x down cases (OpenCV takes its INTER_AREA path for 2x down).
    return TARGETS + [(2 * src_w, 2 * src_h), (max(1, src_w // 2), max(1, src_h // 2))]


@pytest.mark.parametrize("src_size", SOURCES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_resize_equals_cv2_on_a_grid_of_sizes(src_size):
    rng = np.random.default_rng(src_size[0] * 7919 + src_size[1])
    image = rng.integers(0, 256, (src_size[1], src_size[0], 3), dtype=np.uint8)
    for width, height in _targets(*src_size):
        ours = resize_linear(image, width, height)
        theirs = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        assert ours.shape == theirs.shape
        diff = np.abs(ours.astype(int) - theirs.astype(int))
        assert diff.max() == 0, f"{src_size} -> {width}x{height}: max diff {diff.max()}"


def test_resize_grey_and_four_channels():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    assert np.array_equal(resize_linear(grey, 20, 90), cv2.resize(grey, (20, 90), interpolation=cv2.INTER_LINEAR))
    bgra = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    assert np.array_equal(resize_linear(bgra, 71, 11), cv2.resize(bgra, (71, 11), interpolation=cv2.INTER_LINEAR))


def test_resize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="uint8"):
        resize_linear(np.zeros((4, 4, 3), np.float32), 2, 2)
    with pytest.raises(ValueError, match="positive"):
        resize_linear(np.zeros((4, 4, 3), np.uint8), 0, 2)


@pytest.mark.parametrize("rgb", [False, True])
def test_blob_equals_blob_from_image_on_the_photo(rgb):
    from caffessd.resources import bundled

    image = load_image(bundled("yufacedetectnet", "keliamoniz1.jpg"))
    prep = Preprocessing(width=320, height=240, mean=(104.0, 117.0, 123.0), scale=0.017, rgb=rgb)
    ours = make_blob(image, prep)
    theirs = cv2.dnn.blobFromImage(image, scalefactor=0.017, size=(320, 240), mean=(104.0, 117.0, 123.0),
                                   swapRB=rgb, crop=False)
    # Mean and channel order follow the net's order in caffessd and the swapped image in OpenCV.
    assert ours.shape == theirs.shape == (1, 3, 240, 320)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
