"""Clip samplers: spans, clamping, padding counts, covering, uniform starts."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.sampling import clip_indices, clip_span, cover_clips, random_clip, uniform_clips


def test_clip_span_follows_rate_frames_fps_over_30():
    assert clip_span(8, 32, 30) == 256  # TimeSformer 8 x 1/32 at 30 fps
    assert clip_span(96, 4, 30) == 384  # TimeSformer-L
    assert clip_span(8, 32, 15) == 128  # half the frames at 15 fps: same duration
    assert clip_span(8, 32, 29.97) == 256  # 255.74 rounds
    assert clip_span(1, 1, 1) == 1  # never 0
    with pytest.raises(ValueError):
        clip_span(8, 32, 0)


def test_random_clip_stays_inside_and_varies():
    rng = np.random.default_rng(0)
    clips = [random_clip(1000, 256, rng) for _ in range(200)]
    assert all(0 <= s and e == s + 256 and e <= 1000 for s, e in clips)
    starts = {s for s, _ in clips}
    assert len(starts) > 100 and min(starts) < 100 and max(starts) > 644


def test_random_clip_is_seeded():
    a = [random_clip(500, 64, np.random.default_rng(3)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_random_clip_on_short_video_starts_at_zero():
    assert random_clip(100, 256, np.random.default_rng(0)) == (0, 256)


def test_uniform_clips_have_evenly_spaced_starts_from_first_to_last():
    clips = uniform_clips(1000, 200, 5)
    assert [s for s, _ in clips] == [0, 200, 400, 600, 800]
    assert all(e - s == 200 for s, e in clips)
    assert uniform_clips(1000, 200, 1) == [(400, 600)]  # the centre clip
    assert uniform_clips(50, 200, 3) == [(0, 200)] * 3


@pytest.mark.parametrize("total,span", [(1000, 256), (1024, 256), (10, 256), (257, 256), (1, 1)])
def test_cover_clips_cover_every_frame_exactly_once(total, span):
    clips = cover_clips(total, span)
    covered = np.concatenate([np.arange(s, min(e, total)) for s, e in clips])
    np.testing.assert_array_equal(covered, np.arange(total))
    assert len(clips) == -(-total // span)
    assert all(e - s == span for s, e in clips)  # same frame spacing in every clip


def test_clip_indices_linspace_inside_the_span():
    idx, padded = clip_indices(100, 356, 8, 1000)
    assert idx.dtype == np.int64 and padded == 0
    assert idx[0] == 100 and idx[-1] == 355
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, np.round(np.linspace(100, 355, 8)).astype(np.int64))


def test_clip_indices_short_video_pads_with_last_frame_and_counts():
    idx, padded = clip_indices(0, 256, 8, 100)  # span longer than the video
    assert idx.max() == 99
    raw = np.round(np.linspace(0, 255, 8))
    assert padded == int((raw > 99).sum()) == 5
    assert list(idx[-padded:]) == [99] * padded


def test_clip_indices_last_cover_clip_keeps_spacing_and_counts_padding():
    total, span = 1000, 256
    start, end = cover_clips(total, span)[-1]
    idx, padded = clip_indices(start, end, 8, total)
    assert idx[0] == 768 and idx[-1] == 999
    assert list(idx[:7]) == [768, 804, 841, 877, 914, 950, 987]  # every ~36.4 frames, as in the others
    assert padded == 1  # 1023 clamped to 999


def test_clip_indices_rejects_empty_spans():
    with pytest.raises(ValueError):
        clip_indices(5, 5, 8, 100)
