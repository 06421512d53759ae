"""runtime.images: raw pictures -> model input exactly as the sidecar declares (resize, centre crop, colour,
per-channel mean/std, layout), the same function the toolkit reads image folders with."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.images import ImageSpec, load_images, to_array

SPEC = ImageSpec((4, 6), 8, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))


def test_a_plain_colour_becomes_its_normalised_value_in_every_pixel():
    image = np.zeros((10, 20, 3), np.uint8) + np.array([255, 51, 0], np.uint8)
    x = to_array(image, SPEC)
    assert x.shape == (3, 4, 6) and x.dtype == np.float32
    expected = (np.array([1.0, 0.2, 0.0]) - np.array(SPEC.mean)) / np.array(SPEC.std)
    np.testing.assert_allclose(x.reshape(3, -1), np.repeat(expected[:, None], 24, 1), atol=1e-6)


def test_the_shorter_side_is_resized_then_the_centre_cropped():
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 32, 3)).astype(np.uint8)  # shorter side 16 -> 8: the image becomes 8 x 16
    resized = np.asarray(Image.fromarray(image).resize((16, 8), Image.BILINEAR), np.float32) / 255.0
    centre = resized[2:6, 5:11]  # (8 - 4) // 2, (16 - 6) // 2
    expected = ((centre - np.array(SPEC.mean)) / np.array(SPEC.std)).transpose(2, 0, 1)
    np.testing.assert_allclose(to_array(image, SPEC), expected, atol=1e-6)


def test_layout_colour_order_and_grayscale():
    image = np.zeros((8, 8, 3), np.uint8) + np.array([10, 20, 30], np.uint8)
    nhwc = to_array(image, ImageSpec((4, 4), 8, (0, 0, 0), (1, 1, 1), layout="NHWC"))
    bgr = to_array(image, ImageSpec((4, 4), 8, (0, 0, 0), (1, 1, 1), color="bgr"))
    gray = to_array(image, ImageSpec((4, 4), 8, (0,), (1,), color="grayscale"))
    assert nhwc.shape == (4, 4, 3) and np.allclose(nhwc[0, 0], [10 / 255, 20 / 255, 30 / 255])
    assert np.allclose(bgr[:, 0, 0], [30 / 255, 20 / 255, 10 / 255])
    assert gray.shape == (1, 4, 4)


def test_files_and_sidecar_round_trip(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (12, 9, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert ImageSpec.from_sidecar(SPEC.to_sidecar()) == SPEC
    np.testing.assert_array_equal(load_images([tmp_path / "a.png"], SPEC)[0], to_array(pixels, SPEC))


def test_unreadable_files_and_small_resizes_are_one_line_errors(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    with pytest.raises(InputError, match="cannot read image .*broken.jpg"):
        load_images([tmp_path / "broken.jpg"], SPEC)
    with pytest.raises(InputError, match="smaller than the crop"):
        to_array(np.zeros((8, 8, 3), np.uint8), ImageSpec((8, 8), 4, (0, 0, 0), (1, 1, 1)))
