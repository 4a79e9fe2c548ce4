"""ViViT: Hugging Face oracle for Model 1, structure of Models 2-4, tubelet init, attention paths."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from transformers import VivitConfig, VivitForVideoClassification

from pipeline.model import create, load, save
from pipeline.model.vivit import (
    FactorisedDotProductAttention,
    PRESETS,
    Block,
    FactorisedSelfAttentionBlock,
    ViViT,
    ViViTConfig,
    inflate_patch_weight,
    resize_pos_grid,
)
from pipeline.model.weights import WeightError, hf_vivit_config, load_hf_vivit

# 4 frames of 32 x 32; tubelets 2 x 8 x 8 -> 2 x 4 x 4 tokens
TINY = dict(num_classes=5, num_frames=4, image_size=32, patch_size=8, tubelet_size=2, embed_dim=32,
            depth=2, temporal_depth=1, num_heads=4, drop_path_rate=0.0)


def tiny(**kw) -> ViViTConfig:
    return ViViTConfig(**{**TINY, **kw})


def randomise(module: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Every parameter (LayerNorms, embeddings, cls tokens included) to random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def clip(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def sees(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when a perturbation clearly reached `a` (vs `b`); False when it is equal up to rounding."""
    diff = (a - b).abs().max().item()
    assert diff < 1e-6 or diff > 1e-3, f"ambiguous difference {diff}"
    return diff > 1e-3


def hf_vivit(hidden_act: str, num_labels: int = 5) -> VivitForVideoClassification:
    hf_cfg = VivitConfig(image_size=32, num_frames=4, tubelet_size=[2, 8, 8], hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, num_labels=num_labels, hidden_act=hidden_act)
    model = VivitForVideoClassification(hf_cfg).eval()
    randomise(model, seed=1)
    return model


# ------------------------------------------------------------------------- HF oracle (Model 1)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_fast"])
def test_model1_equals_hf_vivit(hidden_act):
    hf = hf_vivit(hidden_act)
    cfg = hf_vivit_config(hf.config.to_dict())
    assert (cfg.model, cfg.gelu) == (1, "exact" if hidden_act == "gelu" else "tanh")
    state, report = load_hf_vivit(hf.state_dict(), cfg)  # in-memory 5.x names: q_proj/k_proj/v_proj
    assert report.copied == len(ViViT(cfg).state_dict()) and not report.fresh and not report.dropped
    ours = ViViT(cfg).eval()
    ours.load_state_dict(state)
    x = clip(2, 3, 4, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=rearrange(x, "b c t h w -> b t c h w")).logits
        got = ours(x)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_hf_save_pretrained_folder_loads_with_its_config(tmp_path):
    """save_pretrained writes the 4.x Hub layout (query/key/value, intermediate.dense) and config.json."""
    hf = hf_vivit("gelu_fast")
    hf.save_pretrained(tmp_path / "hf")
    state, report = load_hf_vivit(str(tmp_path / "hf"))  # config from config.json
    ours = ViViT(hf_vivit_config(hf.config.to_dict())).eval()
    ours.load_state_dict(state)
    # HF itself reads the folder back: the oracle for the on-disk key names
    again = VivitForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    x = clip(1, 3, 4, 32, 32, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), again(pixel_values=x.transpose(1, 2)).logits, atol=1e-5, rtol=0)
    assert report.copied == len(state)
    # the older pytorch_model.bin form of the folder (read with weights_only=True)
    (tmp_path / "bin").mkdir()
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    state_bin, _ = load_hf_vivit(str(tmp_path / "bin"))
    assert state_bin.keys() == state.keys() and all(torch.equal(state_bin[k], state[k]) for k in state)
    with pytest.raises(WeightError, match="no model.safetensors"):
        load_hf_vivit(str(tmp_path))  # a folder without weights


def test_hf_import_new_class_count_reports_fresh_head():
    hf = hf_vivit("gelu")
    cfg = hf_vivit_config(hf.config.to_dict(), num_classes=7)
    state, report = load_hf_vivit(hf.state_dict(), cfg)
    assert sorted(report.fresh) == ["head.bias", "head.weight"]
    assert state["head.weight"].shape == (7, 32)
    ViViT(cfg).load_state_dict(state)


def test_hf_import_is_strict_and_loud():
    hf = hf_vivit("gelu")
    cfg = hf_vivit_config(hf.config.to_dict())
    sd = hf.state_dict()
    broken = {k: v for k, v in sd.items() if k != "vivit.layers.1.attention.k_proj.weight"}
    with pytest.raises(WeightError, match="layer 1 weight: has only"):
        load_hf_vivit(broken, cfg)
    with pytest.raises(WeightError, match="not HF ViViT.*extra.weight"):
        load_hf_vivit({**sd, "extra.weight": torch.zeros(1)}, cfg)
    with pytest.raises(WeightError, match="pos_embed"):  # other geometry: named, never silently resized
        load_hf_vivit(sd, dataclasses.replace(cfg, num_frames=8))
    with pytest.raises(WeightError, match="Model 1"):
        load_hf_vivit(sd, dataclasses.replace(cfg, model=2))
    with pytest.raises(WeightError, match="unexpected.*blocks.1"):
        load_hf_vivit(sd, dataclasses.replace(cfg, depth=1))


# ------------------------------------------------------------------------- all four models


@pytest.mark.parametrize("tokenizer", ["uniform", "tubelet"])
@pytest.mark.parametrize("model", [1, 2, 3, 4])
def test_shapes_grads_and_no_nan(model, tokenizer):
    net = ViViT(tiny(model=model, tokenizer=tokenizer)).train()
    logits = net(clip(2, 3, 4, 32, 32))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_model_names_and_layouts():
    assert ViViTConfig(model="factorised_dot_product").model == 4
    keys = {m: set(ViViT(tiny(model=m)).state_dict()) for m in (1, 2, 3, 4)}
    assert "cls_token" in keys[1] and "temporal_cls_token" in keys[2] and "temporal_blocks.0.attn.qkv.weight" in keys[2]
    assert not any("cls" in k for k in keys[3] | keys[4])  # Models 3 and 4 pool, no cls token
    assert "blocks.0.temporal_attn.qkv.weight" in keys[3]
    assert keys[4] == keys[1] - {"cls_token"}  # Model 4 has Model 1's parameters (but no cls)
    assert ViViT(tiny(model=3)).pos_embed.shape == (1, 2 * 4 * 4, 32)
    with pytest.raises(ValueError, match="even"):
        ViViTConfig(model=4, num_heads=3, embed_dim=48)
    with pytest.raises(ValueError, match="model must be"):
        ViViTConfig(model="divided")


def test_model3_has_no_cls_token_and_pools_tokens():
    net = ViViT(tiny(model=3)).eval()
    assert not any("cls" in name for name, _ in net.named_parameters())
    x = clip(1, 3, 4, 32, 32)
    tokens, size = net.embed(x)
    assert size == (2, 4, 4) and tokens.shape == (1, 32, 32)  # no extra token
    with torch.no_grad():
        h = tokens + net.pos_embed
        for blk in net.blocks:
            h = blk(h, 2)
        torch.testing.assert_close(net(x), net.head(net.norm(h).mean(dim=1)))


def test_model4_head_split_restricts_attention():
    """Spatial heads see only the query's frame, temporal heads only its spatial position."""
    torch.manual_seed(0)
    attn = FactorisedDotProductAttention(tiny(model=4, attn_impl="math")).eval()
    nt, n = 3, 4  # tokens in (t n) order
    x = clip(1, nt * n, 32)
    t, s = 1, 2
    q = t * n + s

    def halves(z):
        with torch.no_grad():
            ys, yt = attn.split_heads(z, nt)
        return ys[0, :, q], yt[0, :, q]  # [H/2, e] each, at the query token

    base_s, base_t = halves(x)
    for (tt, ss), spatial_sees, temporal_sees in [((t, 0), True, False), ((0, s), False, True), ((2, 1), False, False)]:
        y = x.clone()
        y[0, tt * n + ss] += 5.0
        got_s, got_t = halves(y)
        assert sees(got_s, base_s) == spatial_sees, (tt, ss)
        assert sees(got_t, base_t) == temporal_sees, (tt, ss)


def test_model4_block_is_local_but_model3_block_is_not():
    """After one block, a token in another frame AND another position reaches (t, s) in Model 3 only."""
    nt, n = 2, 4
    x = clip(1, nt * n, 32)
    y = x.clone()
    y[0, 1 * n + 3] += 3 * clip(32, seed=12)  # frame 1, position 3 (not a constant shift: LayerNorm removes those)
    for blk, reaches in [(Block(tiny(model=4), 0.0, factorised_heads=True), False),
                         (FactorisedSelfAttentionBlock(tiny(model=3), 0.0), True)]:
        randomise(blk, seed=2, scale=0.3)
        with torch.no_grad():
            changed = sees(blk(x, nt)[0, 0], blk(y, nt)[0, 0])  # frame 0, position 0
        assert changed == reaches, type(blk).__name__


def test_model2_spatial_encoder_is_per_frame():
    """The per-frame cls output of frame 0 ignores frame 1 (uniform tokens, 1 frame per token)."""
    net = ViViT(tiny(model=2, tokenizer="uniform")).eval()
    x = clip(1, 3, 2, 32, 32)
    y = x.clone()
    y[:, :, 1] += 1.0

    def per_frame_cls(v):
        tokens, (nt, gh, gw) = net.embed(v)
        frames = rearrange(tokens, "b (t n) d -> (b t) n d", t=nt)
        frames = torch.cat([net.cls_token.expand(nt, -1, -1), frames], dim=1) + net.pos_embed
        for blk in net.blocks:
            frames = blk(frames)
        return net.norm(frames)[:, 0]

    with torch.no_grad():
        a, b = per_frame_cls(x), per_frame_cls(y)
        torch.testing.assert_close(a[0], b[0])
        assert not torch.allclose(a[1], b[1])
        assert not torch.allclose(net(x), net(y))


# ------------------------------------------------------------------------- tubelet init


def test_inflated_tubelet_on_identical_frames_equals_2d_patch_embedding():
    w2d, bias = clip(32, 3, 8, 8, seed=4), clip(32, seed=5)
    frame = clip(1, 3, 32, 32, seed=6)
    video = frame.unsqueeze(2).expand(-1, -1, 4, -1, -1)  # [1, 3, 4, 32, 32]: 4 identical frames
    net = ViViT(tiny(model=1, tubelet_size=2))
    with torch.no_grad():
        net.patch_embed.proj.weight.copy_(inflate_patch_weight(w2d, 2, "inflation"))
        net.patch_embed.proj.bias.copy_(bias)
        tokens, (nt, gh, gw) = net.embed(video)
    image = rearrange(F.conv2d(frame, w2d, bias, stride=8), "b d h w -> b (h w) d")  # [1, 16, D]
    for t in range(nt):
        torch.testing.assert_close(tokens[:, t * 16:(t + 1) * 16], image, atol=1e-5, rtol=1e-5)


def test_central_frame_tubelet_embeds_the_middle_frame_only():
    w2d, bias = clip(32, 3, 8, 8, seed=7), clip(32, seed=8)
    video = clip(1, 3, 6, 32, 32, seed=9)  # different frames; t = 3 -> middle frames 1 and 4
    kernel = inflate_patch_weight(w2d, 3, "central_frame")
    assert kernel.shape == (32, 3, 3, 8, 8) and kernel[:, :, [0, 2]].abs().sum() == 0
    tokens = rearrange(F.conv3d(video, kernel, bias, stride=(3, 8, 8)), "b d t h w -> b t (h w) d")
    for t, middle in enumerate([1, 4]):
        image = rearrange(F.conv2d(video[:, :, middle], w2d, bias, stride=8), "b d h w -> b (h w) d")
        torch.testing.assert_close(tokens[:, t], image, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="method"):
        inflate_patch_weight(w2d, 2, "average")


# ------------------------------------------------------------------------- paths and sizes


@pytest.mark.parametrize("model", [1, 2, 3, 4])
def test_sdpa_equals_math(model):
    fast = ViViT(tiny(model=model, attn_impl="sdpa")).eval()
    randomise(fast, seed=10, scale=0.2)
    slow = ViViT(tiny(model=model, attn_impl="math")).eval()
    slow.load_state_dict(fast.state_dict())
    x = clip(2, 3, 4, 32, 32, seed=11)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), slow(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("model", [1, 2, 3, 4])
def test_other_clip_sizes_than_config(model):
    net = ViViT(tiny(model=model)).eval()
    with torch.no_grad():
        for t, h, w in [(8, 32, 32), (2, 48, 24)]:
            out = net(clip(1, 3, t, h, w))
            assert out.shape == (1, 5) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="multiples of the token size"):
        net(clip(1, 3, 3, 32, 32))  # 3 frames do not split into tubelets of 2
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        net(clip(1, 4, 4, 32, 32))


def test_resize_pos_grid_keeps_matching_axes_and_resamples_others():
    pos = clip(1, 2, 4, 4, 8)
    assert resize_pos_grid(pos, (2, 4, 4)) is pos
    # a field constant over time stays constant when time is resampled
    const_t = pos[:, :1].expand(-1, 3, -1, -1, -1)
    out = resize_pos_grid(const_t, (6, 4, 4))
    torch.testing.assert_close(out, const_t[:, :1].expand(-1, 6, -1, -1, -1))
    assert resize_pos_grid(pos, (2, 6, 2)).shape == (1, 2, 6, 2, 8)


def test_grad_checkpointing_gives_same_grads():
    torch.manual_seed(0)
    a = ViViT(tiny(model=3)).train()
    b = ViViT(tiny(model=3, grad_checkpointing=True)).train()
    b.load_state_dict(a.state_dict())
    x = clip(2, 3, 4, 32, 32)
    for net in (a, b):
        net(x).square().sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_autocast_forward():
    net = ViViT(tiny(model=2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(clip(2, 3, 4, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out.float()).all()


def test_presets_and_checkpoint_roundtrip(tmp_path):
    net = create("vivit_debug", model="factorised_self_attention", num_classes=3).eval()
    assert net.family == "vivit" and net.config.model == 3
    big = ViViTConfig(**PRESETS["vivit_b"])  # config only: building ViT-B takes seconds
    assert big.model == 2 and big.token_grid == (16, 14, 14) and (big.depth, big.temporal_depth) == (12, 4)
    save(net, str(tmp_path / "v.pt"), epoch=1)
    again = load(str(tmp_path / "v.pt"))
    assert again.config == net.config
    x = clip(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x))
