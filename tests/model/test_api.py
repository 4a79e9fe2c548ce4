"""pipeline.model: presets, our checkpoint format on disk and on S3, and the module's hygiene."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import torch

import pipeline.model as pm
from pipeline.config import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_presets_build_the_paper_variants():
    with torch.device("meta"):
        base, hr, large = (pm.create(p) for p in ("timesformer_base", "timesformer_hr", "timesformer_l"))
    assert (base.config.num_frames, base.config.image_size) == (8, 224)
    assert (hr.config.num_frames, hr.config.image_size) == (16, 448)
    assert (large.config.num_frames, large.config.image_size) == (96, 224)
    assert base.config.attention == "divided" and base.config.num_classes == 400
    assert {"debug", "timesformer_base", "timesformer_hr", "timesformer_l"} <= set(pm.presets())


def test_overrides_replace_fields_and_unknown_ones_are_errors():
    model = pm.create("debug", num_classes=5, attention="space_only", num_frames=2)
    assert (model.config.num_classes, model.config.attention, model.config.num_frames) == (5, "space_only", 2)
    with pytest.raises(ConfigError, match="unknown config key num_class"):
        pm.create("debug", num_class=5)
    with pytest.raises(ConfigError, match="attention"):
        pm.create("debug", attention="sparse")
    with pytest.raises(ValueError, match="unknown preset 'timesformer_xl'"):
        pm.create("timesformer_xl")


@pytest.fixture()
def trained_model():
    model = pm.create("debug", num_classes=3, attention="divided")
    with torch.no_grad():  # make it differ from any fresh init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 4, 32, 32)
    a.eval()
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_save_then_load_gives_the_same_model_in_eval_mode(tmp_path, trained_model):
    path = tmp_path / "ckpt" / "model.pt"
    pm.save(trained_model, str(path), epoch=3, labels=["left", "right", "up"])
    loaded = pm.load(str(path))
    assert not loaded.training and loaded.family == "timesformer"
    assert loaded.config == trained_model.config
    _same_outputs(trained_model, loaded)
    ckpt = pm.read_checkpoint(str(path))
    assert ckpt["format"] == "pipeline.model/1" and ckpt["meta"] == {"epoch": 3, "labels": ["left", "right", "up"]}
    assert not list(path.parent.glob(".*tmp"))  # atomic write left no temporary file


def test_save_and_load_through_s3(s3_bucket, trained_model):
    uri = f"s3://{s3_bucket}/runs/r1/model.pt"
    pm.save(trained_model, uri, epoch=1)
    _same_outputs(trained_model, pm.load(uri))


def test_loading_anything_else_is_a_clear_error(tmp_path):
    official = tmp_path / "official.pyth"
    torch.save({"model_state": {}, "epoch": 1}, official)
    with pytest.raises(ValueError, match="not a pipeline.model/1 checkpoint.*jobs.convert"):
        pm.load(str(official))
    with pytest.raises(FileNotFoundError):
        pm.load(str(tmp_path / "missing.pt"))


def test_checkpoint_with_a_tampered_config_fails_loudly(tmp_path, trained_model):
    path = tmp_path / "model.pt"
    pm.save(trained_model, str(path))
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["depth"] = 3  # one block more than the weights
    torch.save(ckpt, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        pm.load(str(path))


def test_model_package_does_not_import_ray():
    code = ("import sys, pipeline.model, pipeline.model.weights, pipeline.model.timesformer; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_no_lenient_loading_anywhere():
    """Loading is strict and safe everywhere in the code base."""
    offenders = []
    for folder in ("pipeline", "jobs"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            offenders += [f"{path.relative_to(ROOT)}: {s}" for s in ("strict=False", "weights_only=False") if s in text]
    assert not offenders


def test_our_checkpoint_as_safetensors_loads_the_same_model(tmp_path, trained_model):
    from safetensors import safe_open

    path = str(tmp_path / "model.safetensors")
    pm.save(trained_model, path, step=7, recipe={"num_frames": 4, "labels": ["a", "b"]})
    with safe_open(path, "pt") as f:  # a plain safetensors file: tensors + JSON metadata, no pickle
        assert f.metadata()["format"] == '"pipeline.model/1"' and len(list(f.keys())) == len(trained_model.state_dict())
    loaded = pm.load(path)
    assert loaded.config == trained_model.config and not loaded.training
    _same_outputs(trained_model, loaded)
    assert pm.read_checkpoint(path)["meta"] == {"step": 7, "recipe": {"num_frames": 4, "labels": ["a", "b"]}}
