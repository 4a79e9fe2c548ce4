"""ViViT weights from our own checkpoints through the loader table (the Hugging Face ViViT loader
is tested against its oracle in tests/model/test_vivit.py)."""

from __future__ import annotations

import pytest
import torch
from hf_oracles import randomize

import pipeline.model as pm
from pipeline.model.weights import WeightError, load_weights


@pytest.mark.parametrize("model", [1, 2, 3, 4])
def test_ours_round_trip_equals_the_saved_model_exactly(tmp_path, model):
    saved = randomize(pm.create("vivit_debug", model=model)).eval()
    path = str(tmp_path / "model.pt")
    pm.save(saved, path)
    target = pm.create("vivit_debug", model=model).eval()
    state, report = load_weights(target.config, "ours", path)
    target.load_state_dict(state)  # strict
    assert all(torch.equal(state[k], v) for k, v in saved.state_dict().items())
    assert report.source == path and report.copied == len(state) and not (report.fresh or report.dropped)
    x = torch.randn(1, 3, 4, 32, 32)
    torch.testing.assert_close(target(x), saved(x))


def test_ours_with_another_class_count_gets_a_fresh_head(tmp_path):
    path = str(tmp_path / "model.pt")
    pm.save(randomize(pm.create("vivit_debug")), path)
    model = pm.create("vivit_debug", num_classes=9)
    state, report = load_weights(model, "ours", path)
    model.load_state_dict(state)
    assert report.fresh == ["head.weight", "head.bias"] and report.dropped[0].startswith("head.weight [4, 64]")


def test_ours_that_does_not_fit_is_an_error(tmp_path):
    path = str(tmp_path / "model.pt")
    pm.save(pm.create("vivit_debug"), path)
    with pytest.raises(WeightError, match=r"does not fit ViViT\(model 2, depth 3\): missing"):
        load_weights(pm.create("vivit_debug", depth=3), "ours", path)
    with pytest.raises(WeightError, match="shape mismatch .*build the model at the checkpoint's num_frames"):
        load_weights(pm.create("vivit_debug", num_frames=8), "ours", path)
    with pytest.raises(WeightError, match=r"does not fit TimeSformer\(divided\)"):
        load_weights(pm.create("debug"), "ours", path)
