"""Model and optimizer of a run (pipeline.train.build)."""

from __future__ import annotations

from pipeline.train.build import build_model, build_optimizer
from pipeline.train.config import ModelSection, OptimSection


def test_optimizer_skips_weight_decay_on_norms_biases_and_embeddings():
    model = build_model(ModelSection("debug", {"num_frames": 4}), num_classes=4)
    opt = build_optimizer(model, OptimSection(name="sgd", weight_decay=1e-4), lr=0.1)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} >= {"cls_token", "pos_embed", "time_embed", "norm.weight"}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert build_model(ModelSection("debug", {"num_frames": 4}), num_classes=7).head.out_features == 7


def test_init_weights_come_through_the_loader_table_for_both_families(tmp_path):
    import pytest
    import torch

    from pipeline.config import ConfigError
    from pipeline.model import create, save
    from pipeline.train.config import InitSection

    for preset in ("debug", "vivit_debug"):
        torch.manual_seed(0)
        donor = create(preset, num_classes=4)
        path = str(tmp_path / f"{preset}.pt")
        save(donor, path)
        model = build_model(ModelSection(preset, {}, init=InitSection("ours", path)), num_classes=4)
        for key, value in donor.state_dict().items():
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="model.init.source"):
        build_model(ModelSection("vivit_debug", {}, init=InitSection("timm", path)), num_classes=4)


def test_vivit_starts_from_a_hugging_face_vivit_folder(tmp_path):
    import torch
    from einops import rearrange
    from transformers import VivitConfig, VivitForVideoClassification

    from pipeline.train.config import InitSection

    hf = VivitForVideoClassification(VivitConfig(image_size=32, num_frames=4, tubelet_size=[2, 8, 8], hidden_size=64,
                                                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                                                 num_labels=4))
    torch.manual_seed(4)
    with torch.no_grad():  # every tensor random (norms too): no default init hides a wiring bug
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    hf.eval().save_pretrained(tmp_path / "hf")
    section = ModelSection("vivit_debug", {"model": 1}, init=InitSection("hf", str(tmp_path / "hf")))
    model = build_model(section, num_classes=4).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=rearrange(x, "b c t h w -> b t c h w")).logits
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
