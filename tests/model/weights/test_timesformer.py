"""TimeSformer weight import: official / Hugging Face / timm layouts, resizing, and loud strictness."""

from __future__ import annotations

import io

import pytest
import torch
from hf_oracles import hf_timesformer, hf_vit, randomize

from pipeline import storage
from pipeline.model import create
from pipeline.model.timesformer import TimeSformerConfig
from pipeline.model.weights import (
    WeightError, hf_key_to_official, hf_vit_to_timm, load_hf, load_official, load_timm_vit, official_key_to_hf,
)


def official_checkpoint(model: torch.nn.Module) -> dict:
    """What the official code writes: `model.`-prefixed keys under model_state, cfg as YAML text."""
    return {
        "epoch": 15,
        "model_state": {"model." + k: v.clone() for k, v in model.state_dict().items()},
        "optimizer_state": {"state": {}, "param_groups": []},
        "cfg": "MODEL:\n  ARCH: vit\n",
    }


def clip(t: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, t, size, size, generator=torch.Generator().manual_seed(1))


def test_official_checkpoint_file_loads_to_the_same_model(tmp_path):
    source = randomize(create("debug")).eval()
    path = tmp_path / "TimeSformer_divST_debug.pyth"
    torch.save(official_checkpoint(source), path)
    state, report = load_official(str(path), source.config)
    model = create("debug").eval()
    model.load_state_dict(state)
    assert report.copied == len(source.state_dict()) and not (report.resized or report.fresh or report.dropped)
    torch.testing.assert_close(model(clip()), source(clip()))


def test_official_checkpoint_loads_from_s3(s3_bucket):
    source = randomize(create("debug", attention="joint")).eval()
    buf = io.BytesIO()
    torch.save(official_checkpoint(source), buf)
    uri = f"s3://{s3_bucket}/k400/TimeSformer_jointST.pyth"
    storage.write_bytes_atomic(uri, buf.getvalue())
    state, _ = load_official(uri, source.config)
    model = create("debug", attention="joint").eval()
    model.load_state_dict(state)
    torch.testing.assert_close(model(clip()), source(clip()))


def test_resizing_is_reported_and_the_head_of_another_class_count_is_dropped():
    source = randomize(create("debug")).eval()  # 4 frames, 32 px (4 x 4 patches), 4 classes
    target = TimeSformerConfig(**{**source.config.__dict__, "num_frames": 8, "image_size": 48, "num_classes": 7})
    state, report = load_official(official_checkpoint(source), target)
    resized = {k: (list(a), list(b)) for k, a, b in report.resized}
    assert resized == {"pos_embed": ([1, 17, 64], [1, 37, 64]), "time_embed": ([1, 4, 64], [1, 8, 64])}
    assert set(report.fresh) == {"head.weight", "head.bias"}
    assert any(d.startswith("head.weight") for d in report.dropped)
    model = create("debug", num_frames=8, image_size=48, num_classes=7)
    model.load_state_dict(state)  # strict
    assert "resized pos_embed" in str(report) and "fresh init head.weight" in str(report)


def test_missing_unexpected_and_misshapen_keys_are_errors():
    source = create("debug")
    ckpt = official_checkpoint(source)
    del ckpt["model_state"]["model.blocks.1.temporal_fc.weight"]
    with pytest.raises(WeightError, match=r"missing 1 keys: blocks\.1\.temporal_fc\.weight"):
        load_official(ckpt, source.config)
    ckpt = official_checkpoint(source)
    ckpt["model_state"]["model.blocks.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(WeightError, match=r"unexpected 1 keys: blocks\.0\.extra\.weight"):
        load_official(ckpt, source.config)
    with pytest.raises(WeightError, match="shape mismatch: patch_embed.proj.weight"):
        load_official(official_checkpoint(source), TimeSformerConfig(**{**source.config.__dict__, "patch_size": 4}))
    # a divided checkpoint into a joint model: the temporal weights are not silently thrown away
    with pytest.raises(WeightError, match="unexpected .*temporal_attn"):
        load_official(official_checkpoint(source), create("debug", attention="joint").config)


def test_hf_key_names_round_trip_exactly():
    hf = hf_timesformer("divided")
    model = create("debug")
    assert {hf_key_to_official(k) for k in hf.state_dict()} == set(model.state_dict())
    assert {official_key_to_hf(k) for k in model.state_dict()} == set(hf.state_dict())
    with pytest.raises(WeightError, match="unknown Hugging Face"):
        hf_key_to_official("timesformer.encoder.layer.0.something.weight")


def test_hf_file_loads(tmp_path):
    hf = hf_timesformer("divided")
    path = tmp_path / "hf.pt"
    torch.save(hf.state_dict(), path)
    state, report = load_hf(str(path), create("debug").config)
    assert report.copied == len(hf.state_dict())
    assert torch.equal(state["blocks.1.temporal_fc.weight"], hf.state_dict()["timesformer.encoder.layer.1.temporal_dense.weight"])


def test_timm_vit_init_follows_the_official_recipe():
    vit = hf_vit()
    timm = hf_vit_to_timm(vit.state_dict())
    cfg = create("debug", num_frames=8, image_size=48).config  # other frames and resolution
    state, report = load_timm_vit(timm, cfg)
    create("debug", num_frames=8, image_size=48).load_state_dict(state)
    derived = dict(report.initialized_from)
    assert derived["blocks.0.temporal_attn.qkv.weight"] == "blocks.0.attn.qkv.weight"
    assert derived["blocks.1.temporal_norm1.bias"] == "blocks.1.norm1.bias"
    assert torch.equal(state["blocks.1.temporal_attn.proj.weight"], timm["blocks.1.attn.proj.weight"])
    assert torch.count_nonzero(state["blocks.0.temporal_fc.weight"]) == 0
    assert torch.count_nonzero(state["time_embed"]) == 0
    assert {"time_embed", "head.weight", "head.bias"} <= set(report.fresh)
    assert [k for k, *_ in report.resized] == ["pos_embed"]


@pytest.mark.parametrize("attention", ["axial", "local_global"])
def test_timm_vit_initialises_the_extra_schemes(attention):
    timm = hf_vit_to_timm(hf_vit().state_dict())
    model = create("debug", attention=attention)
    state, report = load_timm_vit(timm, model.config)
    model.load_state_dict(state)
    extra = {k.split(".")[2] for k, _ in report.initialized_from}
    assert extra == ({"temporal_attn", "temporal_norm1", "width_attn", "width_norm1"} if attention == "axial"
                     else {"local_attn", "local_norm1"})


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightError, match="expected a dict checkpoint"):
        load_official(str(path), create("debug").config)
