"""RandAugment for video: one transform for all frames of a clip, reproducible, uint8 in and out."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_index_video
from pipeline.data import randaugment as ra
from pipeline.data.clips import ClipConfig, read_clips, row_rng
from pipeline.data.decode import Video

CLIP_STATS = {"autocontrast", "equalize", "contrast"}  # ops whose table / blend uses the whole clip


def clip(t: int = 4, seed: int = 0) -> np.ndarray:
    """Frames with structure (a gradient, a square, noise) that differ from frame to frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:24, 0:32]
    frames = []
    for i in range(t):
        f = np.stack([xx * 6, yy * 8, (xx + yy) * 3], axis=-1).astype(np.float32) + rng.normal(0, 10, (24, 32, 3))
        f[6:14, 4 + 3 * i:12 + 3 * i] = [250, 40, 90]
        frames.append(f)
    return np.clip(frames, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(ra.OPS))
def test_each_op_is_one_transform_for_every_frame(name):
    frames = clip()
    for level in (-1.0, -0.4, 0.5, 1.0):
        out = ra.apply(frames, [(name, level)])
        assert out.dtype == np.uint8 and out.shape == frames.shape
        same = ra.apply(np.repeat(frames[:1], 4, axis=0), [(name, level)])
        assert all(np.array_equal(same[0], f) for f in same)  # equal frames stay equal
        if name not in CLIP_STATS:  # frame by frame gives the same result
            assert all(np.array_equal(out[t], ra.apply(frames[t:t + 1], [(name, level)])[0]) for t in range(4))


@pytest.mark.parametrize("name", sorted(set(ra.OPS) - {"autocontrast", "equalize"}))
def test_magnitude_zero_is_the_identity(name):
    frames = clip()
    assert np.array_equal(ra.apply(frames, [(name, 0.0)]), frames)


def test_draws_are_reproducible_from_the_seed_and_differ_between_clips():
    frames = clip()
    a = ra.randaugment(frames, 2, 9, np.random.default_rng(7))
    b = ra.randaugment(frames, 2, 9, np.random.default_rng(7))
    assert np.array_equal(a, b)
    draws = {tuple(ra.draw(2, 9, np.random.default_rng(s))) for s in range(20)}
    assert len(draws) > 10  # different clips (seeds) get different ops / signs
    assert all(len(d) == 2 and all(abs(level) == 0.9 for _, level in d) for d in draws)
    with pytest.raises(ValueError, match="randaugment_m"):
        ra.draw(2, 11, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        ra.apply(frames.astype(np.float32), [])


def test_train_clips_get_randaugment_from_the_row_rng(tmp_path):
    path = write_index_video(tmp_path / "v.mp4", num_frames=60, fps=30, gop=12, size=(64, 48))
    row = {"path": path, "video_id": "v"}
    cfg = dict(num_frames=4, sampling_rate=4, crop_size=32, hflip=False)
    with Video(path) as video:
        plain = read_clips(video, row, ClipConfig(**cfg), mode="train", rng=row_rng(0, 1, row)).frames
        aug = [read_clips(video, row, ClipConfig(**cfg, randaugment_n=3, randaugment_m=10), mode="train",
                          rng=row_rng(0, 1, row)).frames for _ in range(2)]
    assert aug[0].dtype == np.uint8 and aug[0].shape == plain.shape == (1, 1, 4, 32, 32, 3)
    assert np.array_equal(aug[0], aug[1]) and not np.array_equal(aug[0], plain)
    with pytest.raises(ValueError, match="randaugment_n"):
        ClipConfig(randaugment_n=-1)
