"""InferConfig validation."""

from __future__ import annotations

import pytest

from pipeline.data.clips import ClipConfig
from pipeline.infer import InferConfig, clip_config


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="crops"):
        InferConfig(crops=2)
    with pytest.raises(ValueError, match="aggregate"):
        InferConfig(aggregate="median")
    with pytest.raises(ValueError, match="short_side"):
        InferConfig(short_side=16, crop_size=32)


def test_clip_config_fills_sizes_from_the_model():
    info = {"num_frames": 8, "image_size": 224}
    spec = clip_config(InferConfig(), info)
    assert spec == ClipConfig(num_frames=8, sampling_rate=32, sampling="cover", clips=1, crops=1, short_side=224,
                              crop_size=224, clips_per_decode=8)
    spec = clip_config(InferConfig(num_frames=4, crop_size=32, short_side=40, crops=3, sampling="uniform", clips=2),
                       info)
    assert (spec.num_frames, spec.crop_size, spec.short_side, spec.crops, spec.sampling, spec.clips) == (
        4, 32, 40, 3, "uniform", 2)
