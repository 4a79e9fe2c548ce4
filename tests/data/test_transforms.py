"""uint8 clip transforms."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.transforms import center_crop, hflip, random_crop, short_side_resize, three_crops


def _coords_clip(t: int, h: int, w: int) -> np.ndarray:
    """[T, H, W, 3] whose R = row, G = column, B = frame (positions are readable after a crop)."""
    clip = np.zeros((t, h, w, 3), np.uint8)
    clip[..., 0] = np.arange(h)[None, :, None]
    clip[..., 1] = np.arange(w)[None, None, :]
    clip[..., 2] = np.arange(t)[:, None, None]
    return clip


def test_short_side_resize_landscape_and_portrait():
    assert short_side_resize(_coords_clip(2, 48, 64), 24).shape == (2, 24, 32, 3)
    assert short_side_resize(_coords_clip(2, 64, 48), 24).shape == (2, 32, 24, 3)
    assert short_side_resize(_coords_clip(1, 47, 63), 30).shape == (1, 30, 40, 3)


def test_short_side_resize_keeps_dtype_and_constant_images():
    clip = np.full((3, 20, 30, 3), 77, np.uint8)
    out = short_side_resize(clip, 50)
    assert out.dtype == np.uint8 and np.all(out == 77)


def test_center_crop_position():
    out = center_crop(_coords_clip(2, 48, 64), 32)
    assert out.shape == (2, 32, 32, 3)
    assert (out[0, 0, 0, 0], out[0, 0, 0, 1]) == (8, 16)


def test_random_crop_same_window_for_all_frames_and_inside():
    rng = np.random.default_rng(1)
    for _ in range(20):
        out = random_crop(_coords_clip(3, 40, 50), 16, rng)
        assert out.shape == (3, 16, 16, 3)
        assert np.all(out[:, :, :, :2] == out[:1, :, :, :2])  # same window every frame
        top, left = int(out[0, 0, 0, 0]), int(out[0, 0, 0, 1])
        assert 0 <= top <= 24 and 0 <= left <= 34


def test_three_crops_landscape_left_centre_right():
    crops = three_crops(_coords_clip(1, 32, 80), 32)
    assert [int(c[0, 0, 0, 1]) for c in crops] == [0, 24, 48]
    assert all(int(c[0, 0, 0, 0]) == 0 for c in crops)


def test_three_crops_portrait_top_centre_bottom():
    crops = three_crops(_coords_clip(1, 80, 32), 32)
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 24, 48]


def test_crop_larger_than_frame_is_an_error():
    with pytest.raises(ValueError):
        center_crop(_coords_clip(1, 20, 20), 32)


def test_hflip_mirrors_columns():
    clip = _coords_clip(2, 4, 6)
    out = hflip(clip)
    assert list(out[0, 0, :, 1]) == [5, 4, 3, 2, 1, 0]
    np.testing.assert_array_equal(hflip(out), clip)
