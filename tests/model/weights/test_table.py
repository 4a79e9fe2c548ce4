"""The loader table: one entry point for every (family, source), clear errors for the rest, and
`ours` checkpoints that come back exactly."""

from __future__ import annotations

import pytest
import torch
from hf_oracles import randomize
from torch import nn

import pipeline.model as pm
from pipeline.model.weights import LOADERS, WeightError, load_official, load_weights, sources


def test_every_family_and_source_has_one_loader():
    assert sources("timesformer") == ["hf", "official", "ours", "timm"]
    assert sources("vivit") == ["hf", "ours"]
    assert {fam for fam, _ in LOADERS} == set(pm.presets().values())


def test_a_source_the_family_cannot_take_names_the_allowed_ones(tmp_path):
    with pytest.raises(WeightError, match=r"vivit weights load from sources \['hf', 'ours'\], not 'official'"):
        load_weights(pm.create("vivit_debug"), "official", str(tmp_path / "x.pyth"))
    with pytest.raises(WeightError, match=r"\['hf', 'official', 'ours', 'timm'\], not 'onnx'"):
        load_weights(pm.create("debug").config, "onnx", str(tmp_path / "x.onnx"))


def test_an_unknown_family_or_config_is_a_clear_error(tmp_path):
    class Other(nn.Linear):
        family, config = "x3d", None

    with pytest.raises(WeightError, match="no weight loaders for model family 'x3d'"):
        load_weights(Other(1, 1), "ours", str(tmp_path / "m.pt"))
    with pytest.raises(WeightError, match="not a pipeline model"):
        load_weights(nn.Linear(1, 1), "ours", str(tmp_path / "m.pt"))
    with pytest.raises(WeightError, match="dict is not a model config"):
        load_weights({"depth": 2}, "ours", str(tmp_path / "m.pt"))


@pytest.mark.parametrize("attention", ["divided", "space_only"])
def test_ours_round_trip_equals_the_saved_model_exactly(tmp_path, attention):
    saved = randomize(pm.create("debug", attention=attention))
    path = str(tmp_path / "model.pt")
    pm.save(saved, path, epoch=3)
    state, report = load_weights(pm.create("debug", attention=attention), "ours", path)
    assert list(state) == list(saved.state_dict())
    assert all(torch.equal(state[k], v) for k, v in saved.state_dict().items())
    assert report.copied == len(state) and not (report.resized or report.fresh or report.dropped)
    # the same as fitting the checkpoint's state dict like an official one (what training's init does)
    same, same_report = load_official(pm.read_checkpoint(path)["state_dict"], saved.config)
    assert all(torch.equal(same[k], v) for k, v in state.items()) and same_report == report


def test_ours_into_other_frames_and_classes_resizes_and_reports(tmp_path):
    path = str(tmp_path / "model.pt")
    pm.save(randomize(pm.create("debug")), path)
    model = pm.create("debug", num_frames=8, num_classes=6)
    state, report = load_weights(model, "ours", path)
    model.load_state_dict(state)  # strict
    assert [k for k, *_ in report.resized] == ["time_embed"] and report.fresh == ["head.weight", "head.bias"]
