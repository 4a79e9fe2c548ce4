"""`video_clips`: one video's clips for inference, on real PyAV-encoded videos."""

from __future__ import annotations

import numpy as np
import pytest
from infer_cases import CLIP

from pipeline.data.clips import ClipConfig
from pipeline.infer import video_clips


def test_video_clips_cover_the_video_without_overlap(short_videos):
    spec = ClipConfig(sampling="cover", clips=1, crops=1, **CLIP)
    meta, clips = video_clips({"uri": short_videos[0]}, spec)
    k = len(meta["starts"])
    assert k == int(np.ceil(45 / 16))  # 3 s at 15 fps, 16-frame clips
    assert clips.shape == (k, 1, 4, 32, 32, 3) and clips.dtype == np.uint8
    assert meta["starts"][0] == 0.0
    assert meta["ends"][-1] == pytest.approx(3.0)
    assert all(a == pytest.approx(b) for a, b in zip(meta["ends"][:-1], meta["starts"][1:]))


def test_video_clips_uniform_three_crops_differ(short_videos):
    spec = ClipConfig(sampling="uniform", clips=2, crops=3, **{**CLIP, "short_side": 40})
    meta, clips = video_clips({"uri": short_videos[1]}, spec)
    assert clips.shape == (2, 3, 4, 32, 32, 3)
    assert not np.array_equal(clips[0, 0], clips[0, 2])  # left and right crops of a 53x40 frame

