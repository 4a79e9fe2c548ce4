"""`read_video`: one video's clips for inference, on real PyAV-encoded videos."""

from __future__ import annotations

import numpy as np
import pytest
from infer_cases import CLIP

from pipeline.data.clips import ClipConfig
from pipeline.infer import read_video


def test_video_clips_cover_the_video_without_overlap(short_videos):
    spec = ClipConfig(sampling="cover", clips=1, crops=1, **CLIP)
    meta, clips = read_video({"uri": short_videos[0]}, spec)
    k = len(meta["starts"])
    assert k == int(np.ceil(45 / 16))  # 3 s at 15 fps, 16-frame clips
    assert clips.shape == (k, 1, 4, 32, 32, 3) and clips.dtype == np.uint8
    assert meta["starts"][0] == 0.0
    assert meta["ends"][-1] == pytest.approx(3.0)
    assert all(a == pytest.approx(b) for a, b in zip(meta["ends"][:-1], meta["starts"][1:]))


def test_video_clips_uniform_three_crops_differ(short_videos):
    spec = ClipConfig(sampling="uniform", clips=2, crops=3, **{**CLIP, "short_side": 40})
    meta, clips = read_video({"uri": short_videos[1]}, spec)
    assert clips.shape == (2, 3, 4, 32, 32, 3)
    assert not np.array_equal(clips[0, 0], clips[0, 2])  # left and right crops of a 53x40 frame



def test_a_segment_item_is_covered_only_inside_its_segment(short_videos):
    spec = ClipConfig(sampling="cover", clips=1, crops=1, **CLIP)
    meta, clips = read_video({"uri": short_videos[0], "start_sec": 1.0, "end_sec": 2.0}, spec)
    assert meta["starts"][0] == pytest.approx(1.0) and meta["ends"][-1] == pytest.approx(2.0)
    assert len(meta["starts"]) == clips.shape[0] == 1  # 15 frames of the segment: one 16-frame clip
    whole, _ = read_video({"uri": short_videos[0]}, spec)
    assert len(whole["starts"]) == 3
