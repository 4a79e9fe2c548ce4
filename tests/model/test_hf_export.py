"""Hugging Face folders in and out through jobs.convert, with random weights at odd geometries:
HF folder -> ours -> HF folder gives the same logits in `transformers`; config.json alone sets the
geometry and the labels; official `.pyth` -> ours records the clip recipe from flags."""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange
from hf_oracles import HF_ATTENTION, randomize

import pipeline.model as pm
from jobs.convert import main
from pipeline.model.recipe import checkpoint_recipe
from pipeline.model.weights import WeightError, export_hf

LABELS = ["cut", "fold", "pour", "stir", "wipe"]
# (image, patch, frames, hidden, layers, heads, intermediate, layer-norm eps): none is a preset
TIMESFORMER_GEOMETRIES = [(24, 6, 3, 48, 3, 3, 96, 1e-5), (40, 8, 5, 32, 1, 2, 80, 1e-6)]


def _hf_timesformer(geometry, attention, seed):
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    size, patch, frames, hidden, layers, heads, inter, eps = geometry
    cfg = TimesformerConfig(image_size=size, patch_size=patch, num_frames=frames, hidden_size=hidden,
                            num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter,
                            layer_norm_eps=eps, attention_type=HF_ATTENTION[attention],
                            id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    return randomize(TimesformerForVideoClassification(cfg), seed).eval()


def _hf_vivit(hidden_act, seed):
    from transformers import VivitConfig, VivitForVideoClassification

    cfg = VivitConfig(image_size=24, num_frames=6, tubelet_size=[3, 6, 6], hidden_size=48, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=120, hidden_act=hidden_act, layer_norm_eps=1e-5,
                      id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    return randomize(VivitForVideoClassification(cfg), seed).eval()


def _logits(hf, x):
    with torch.no_grad():
        return hf(pixel_values=rearrange(x, "b c t h w -> b t c h w")).logits


def _ours_reference(hf, x):
    """What our model must give: HF's logits, except space-only, where HF classifies every frame
    and the official model averages the tokens over time first."""
    if getattr(hf.config, "attention_type", None) != "space_only":
        return _logits(hf, x)
    with torch.no_grad():
        out = hf(pixel_values=rearrange(x, "b c t h w -> b t c h w"), output_hidden_states=True)
        last = rearrange(out.hidden_states[-1], "(b t) n d -> b t n d", b=x.shape[0]).mean(1)
        return hf.classifier(hf.timesformer.layernorm(last)[:, 0])


def _round_trip(hf, cls, tmp_path, x):
    """save_pretrained -> convert (no preset) -> ours -> convert --to hf -> from_pretrained."""
    hf.save_pretrained(tmp_path / "hf_in")
    ours = tmp_path / "ours" / "model.pt"
    assert main(["--source", "hf", "--input", str(tmp_path / "hf_in"), "--output", str(ours)]) == 0
    model = pm.load(str(ours))
    recipe, notes = checkpoint_recipe(pm.read_checkpoint(str(ours)))
    assert not notes and recipe["labels"] == LABELS and recipe["num_frames"] == model.config.num_frames
    assert main(["--source", "ours", "--input", str(ours), "--to", "hf", "--output", str(tmp_path / "hf_out")]) == 0
    back = cls.from_pretrained(tmp_path / "hf_out").eval()
    assert back.config.id2label == hf.config.id2label
    with torch.no_grad():
        torch.testing.assert_close(model(x), _ours_reference(hf, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_logits(back, x), _logits(hf, x), atol=1e-5, rtol=1e-5)
    return model


@pytest.mark.parametrize("attention", ["divided", "joint", "space_only"])
@pytest.mark.parametrize("geometry", TIMESFORMER_GEOMETRIES)
def test_timesformer_hf_folder_round_trip(tmp_path, geometry, attention):
    from transformers import TimesformerForVideoClassification

    hf = _hf_timesformer(geometry, attention, seed=sum(geometry[:3]))
    size, patch, frames, hidden, layers, heads, inter, eps = geometry
    x = torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(1))
    model = _round_trip(hf, TimesformerForVideoClassification, tmp_path, x)
    c = model.config
    assert (c.image_size, c.patch_size, c.num_frames, c.embed_dim, c.depth, c.num_heads, c.attention,
            c.layer_norm_eps, c.num_classes) == (size, patch, frames, hidden, layers, heads, attention, eps, 5)
    assert c.mlp_ratio * hidden == inter


@pytest.mark.parametrize("hidden_act", ["gelu_fast", "gelu"])
def test_vivit_hf_folder_round_trip(tmp_path, hidden_act):
    from transformers import VivitForVideoClassification

    x = torch.randn(2, 3, 6, 24, 24, generator=torch.Generator().manual_seed(2))
    model = _round_trip(_hf_vivit(hidden_act, seed=3), VivitForVideoClassification, tmp_path, x)
    assert (model.config.model, model.config.tubelet_size, model.config.patch_size) == (1, 3, 6)
    written = json.loads((tmp_path / "hf_out" / "config.json").read_text())
    assert written["hidden_act"] == hidden_act and written["tubelet_size"] == [3, 6, 6]


def test_what_hf_cannot_express_is_an_error(tmp_path):
    with pytest.raises(WeightError, match="no 'axial' attention"):
        export_hf(pm.create("debug", attention="axial"), str(tmp_path / "a"))
    with pytest.raises(WeightError, match="Model 1 with tubelet tokens; this is Model 2"):
        export_hf(pm.create("vivit_debug"), str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_official_pyth_records_the_recipe_from_flags(tmp_path):
    source = randomize(pm.create("debug", num_frames=6, image_size=24, patch_size=6, embed_dim=48)).eval()
    src = tmp_path / "official.pyth"
    torch.save({"model_state": {"model." + k: v for k, v in source.state_dict().items()}}, src)
    out = tmp_path / "m.pt"
    assert main(["--source", "official", "--input", str(src), "--preset", "debug", "--num-frames", "6",
                 "--image-size", "24", "--set", "overrides.patch_size=6", "--set", "overrides.embed_dim=48",
                 "--sampling-rate", "16", "--short-side", "28", "--crops", "3", "--output", str(out)]) == 0
    x = torch.randn(1, 3, 6, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(pm.load(str(out))(x), source(x))
    recipe, notes = checkpoint_recipe(pm.read_checkpoint(str(out)))
    assert not notes
    assert {k: recipe[k] for k in ("num_frames", "sampling_rate", "crop_size", "short_side", "sampling", "clips",
                                   "crops")} == {"num_frames": 6, "sampling_rate": 16, "crop_size": 24,
                                                 "short_side": 28, "sampling": "uniform", "clips": 1, "crops": 3}
    assert recipe["mean"] == [0.45] * 3 and recipe["labels"] is None
    assert json.loads((tmp_path / "summary.json").read_text())["recipe"]["sampling_rate"] == 16
