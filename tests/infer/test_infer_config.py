"""InferConfig validation."""

from __future__ import annotations

import pytest

from pipeline.infer import ClipSpec, InferConfig, resolve_spec


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="crops"):
        InferConfig(crops=2)
    with pytest.raises(ValueError, match="aggregate"):
        InferConfig(aggregate="median")
    with pytest.raises(ValueError, match="short_side"):
        InferConfig(short_side=16, crop_size=32)



def test_resolve_spec_fills_sizes_from_the_model():
    info = {"num_frames": 8, "image_size": 224}
    spec = resolve_spec(InferConfig(), info)
    assert spec == ClipSpec(num_frames=8, sampling_rate=32, cover=True, clips=1, crops=1, short_side=224,
                            crop_size=224, clips_per_decode=8)
    spec = resolve_spec(InferConfig(num_frames=4, crop_size=32, short_side=40, crops=3, cover=False, clips=2), info)
    assert (spec.num_frames, spec.crop_size, spec.short_side, spec.crops, spec.cover, spec.clips) == (
        4, 32, 40, 3, False, 2)
