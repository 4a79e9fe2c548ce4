"""TimeSformer: shapes, paper numbers, equivalence with Hugging Face and with an image ViT."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange
from hf_oracles import hf_timesformer, hf_vit, randomize
from torch.utils.flop_counter import FlopCounterMode

from pipeline.model import create
from pipeline.model.timesformer import (
    ATTENTIONS, GLOBAL, LOCAL, TEMPORAL, WIDTH, HEIGHT, TimeSformer, TimeSformerConfig,
)
from pipeline.model.weights import hf_vit_to_timm, load_hf, load_timm_vit


def clip(b: int = 2, t: int = 4, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_scheme_classifies_clips_of_any_size(attention):
    model = create("debug", attention=attention, num_classes=5).eval()
    assert model.family == "timesformer" and model.config.attention == attention
    assert model(clip()).shape == (2, 5)
    # other T / H / W than the config's: embeddings are resampled, not an error
    other = model(clip(b=1, t=6, h=48, w=32))
    assert other.shape == (1, 5) and torch.isfinite(other).all()


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_parameter_learns(attention):
    """All weights get gradients and a few SGD steps fit a fixed batch (wiring check)."""
    torch.manual_seed(0)
    model = create("debug", attention=attention)
    x, y = clip(b=4), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if not losses:
            no_grad = [n for n, p in model.named_parameters() if p.grad is None]
            assert not no_grad, no_grad
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_parameter_counts_match_the_paper():
    counts = {}
    for attention in ("divided", "space_only", "joint"):
        with torch.device("meta"):
            model = TimeSformer(TimeSformerConfig(attention=attention, num_classes=400))
        counts[attention] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    assert counts == {"divided": 121.57, "space_only": 86.11, "joint": 86.11}


@pytest.mark.parametrize("attention,frames,size,gmacs", [
    ("divided", 8, 224, 195.8), ("divided", 16, 448, 1702.7), ("divided", 96, 224, 2379.9),
    ("space_only", 8, 224, 140.5), ("joint", 8, 224, 179.6),
])
def test_cost_per_view_matches_the_official_code(attention, frames, size, gmacs):
    """Multiply-accumulates per view, counted on meta tensors (no memory, no compute)."""
    with torch.device("meta"):
        model = TimeSformer(TimeSformerConfig(attention=attention, num_frames=frames, image_size=size)).eval()
        x = torch.empty(1, 3, frames, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    assert counter.get_total_flops() / 2e9 == pytest.approx(gmacs, abs=0.06)


def test_fresh_model_starts_as_an_image_model():
    """Official init: temporal_fc and time_embed zero, so step 0 ignores time."""
    model = create("debug")
    for blk in model.blocks:
        assert torch.count_nonzero(blk.temporal_fc.weight) == 0 and torch.count_nonzero(blk.temporal_fc.bias) == 0
    assert torch.count_nonzero(model.time_embed) == 0
    x = clip(b=1)
    model.eval()
    shuffled = x[:, :, torch.tensor([2, 0, 3, 1])]
    torch.testing.assert_close(model(x), model(shuffled), atol=1e-5, rtol=1e-5)


def test_from_scratch_init_sees_frame_order_at_step_0():
    """The init fields for training from scratch (configs/debug.yaml): random time_embed and
    temporal_fc break the official init's frame-order blindness before any step; Linear weights
    take `linear_init_std`; negative stds are errors."""
    torch.manual_seed(0)
    model = create("debug", linear_init_std=0.1, time_embed_init_std=1.0, temporal_fc_init_std=0.02).eval()
    assert 0.8 < model.time_embed.std().item() < 1.2
    assert 0.015 < model.blocks[1].temporal_fc.weight.std().item() < 0.025
    assert 0.08 < model.blocks[0].mlp.fc1.weight.std().item() < 0.12
    x = clip(b=1)
    assert (model(x) - model(x.flip(2))).abs().max() > 1e-3
    assert 0.015 < create("debug").blocks[0].mlp.fc1.weight.std().item() < 0.025  # official 0.02
    with pytest.raises(ValueError, match="time_embed_init_std must be >= 0"):
        TimeSformerConfig(time_embed_init_std=-1.0)
    with pytest.raises(ValueError, match="linear_init_std must be > 0"):
        TimeSformerConfig(linear_init_std=0.0)


def test_divided_sees_frame_order_space_only_does_not():
    """Motion direction needs time: reversed clips differ for divided, not for space-only."""
    x = clip(b=1)
    reverse = x.flip(2)
    divided = randomize(create("debug", attention="divided")).eval()
    space = randomize(create("debug", attention="space_only")).eval()
    assert (divided(x) - divided(reverse)).abs().max() > 1e-3
    torch.testing.assert_close(space(x), space(reverse), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["divided", "joint", "space_only"])
def test_equals_hugging_face_timesformer(attention):
    """HF's TimeSformer equals the official code for these schemes: same logits after renaming."""
    hf = hf_timesformer(attention)
    model = create("debug", attention=attention).eval()
    state, _ = load_hf(hf.state_dict(), model.config)
    model.load_state_dict(state)
    x = clip()
    with torch.no_grad():
        out = hf(pixel_values=rearrange(x, "b c t h w -> b t c h w"), output_hidden_states=True)
        if attention == "space_only":  # HF gives per-frame logits; official averages tokens over T
            last = rearrange(out.hidden_states[-1], "(b t) n d -> b t n d", b=2).mean(1)
            ref = hf.classifier(hf.timesformer.layernorm(last)[:, 0])
        else:
            ref = out.logits
        torch.testing.assert_close(model(x), ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["divided", "space_only"])
def test_vit_initialised_model_equals_the_vit_on_a_still_clip(attention):
    vit = hf_vit()
    model = create("debug", attention=attention).eval()
    state, report = load_timm_vit(hf_vit_to_timm(vit.state_dict()), model.config)
    model.load_state_dict(state)
    image = clip(b=2, t=1)[:, :, 0]  # [B, 3, H, W]
    still = image.unsqueeze(2).expand(-1, -1, 4, -1, -1)  # the same frame 4 times
    with torch.no_grad():
        ref = vit(pixel_values=image).last_hidden_state[:, 0]
        torch.testing.assert_close(model.forward_features(still), ref, atol=3e-6, rtol=1e-5)


def _index_grid(t: int, h: int, w: int) -> torch.Tensor:
    """[1, t, h, w, 3] holding each token's own (t, y, x) coordinates."""
    tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([tt, yy, xx], dim=-1)[None]


def _groups(pattern: str, grid: torch.Tensor, **axes) -> torch.Tensor:
    return rearrange(grid, pattern, **axes)  # [groups, len, 3]


def test_attention_groups_follow_the_paper():
    t, h, w = 4, 4, 6
    grid = _index_grid(t, h, w)
    temporal = _groups(TEMPORAL, grid)  # one group per spatial position, over all frames
    assert temporal.shape == (h * w, t, 3) and (temporal[..., 1:] == temporal[:, :1, 1:]).all()
    width = _groups(WIDTH, grid)  # one group per (frame, row)
    assert width.shape == (t * h, w, 3) and (width[..., :2] == width[:, :1, :2]).all()
    height = _groups(HEIGHT, grid)  # one group per (frame, column)
    assert height.shape == (t * w, h, 3) and (height[..., [0, 2]] == height[:, :1, [0, 2]]).all()
    local = _groups(LOCAL, grid, wy=2, wx=2)  # 4 windows of T x h/2 x w/2
    assert local.shape == (4, t * (h // 2) * (w // 2), 3)
    quadrant = (local[..., 1] // (h // 2)) * 2 + local[..., 2] // (w // 2)
    assert (quadrant == quadrant[:, :1]).all()
    sparse = _groups(GLOBAL, grid, st=2, sy=2, sx=2)  # stride 2 in t, y, x: equal parity
    assert sparse.shape == (8, (t // 2) * (h // 2) * (w // 2), 3)
    assert (sparse % 2 == sparse[:, :1] % 2).all()
    # each scheme covers every token exactly once
    for g in (temporal, width, height, local, sparse):
        assert g.reshape(-1, 3).unique(dim=0).shape[0] == t * h * w


def test_drop_path_rises_over_depth_and_is_off_in_eval():
    model = create("debug", drop_path_rate=0.2, depth=3)
    assert [blk.drop_path_rate for blk in model.blocks] == pytest.approx([0.0, 0.1, 0.2])
    model.eval()
    x = clip(b=1)
    torch.testing.assert_close(model(x), model(x))


def test_drop_path_keeps_samples_at_rate_one_minus_p_scaled_up():
    from pipeline.model.layers import drop_path, drop_path_mask  # both families' stochastic depth

    torch.manual_seed(0)
    x = torch.ones(20000, 3)
    mask = drop_path_mask(x, 0.25, training=True)
    assert mask.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (mask > 0).float().mean().item() == pytest.approx(0.75, abs=0.02)
    assert drop_path_mask(x, 0.25, training=False) is None and drop_path_mask(x, 0.0, training=True) is None
    out = drop_path(x, drop_path_mask(x, 0.25, training=True))  # whole samples
    assert out.unique().tolist() == pytest.approx([0.0, 1 / 0.75]) and (out[:, 0:1] == out).all()
    assert out.mean().item() == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("bad,message", [
    (torch.randn(2, 3, 32, 32), "expected input"),
    (torch.randn(1, 1, 4, 32, 32), "expected input"),
    (torch.randn(1, 3, 4, 30, 32), "multiples of patch_size"),
    (torch.zeros(1, 3, 4, 32, 32, dtype=torch.uint8), "float"),
])
def test_bad_input_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        create("debug")(bad)


def test_local_global_needs_an_even_patch_grid():
    with pytest.raises(ValueError, match="even number of patches"):
        create("debug", attention="local_global")(clip(b=1, h=24))


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TimeSformerConfig(embed_dim=100, num_heads=12)
    with pytest.raises(ValueError, match="attention must be one of"):
        TimeSformerConfig(attention="sparse")


def test_gradient_checkpointing_changes_memory_not_results():
    torch.manual_seed(0)
    plain = randomize(create("debug", drop_path_rate=0.0))
    ckpt = create("debug", drop_path_rate=0.0, grad_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = clip()
    grads, saved = [], []
    for model in (plain, ckpt):
        model.train()
        sizes = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(x).square().mean()
        loss.backward()
        saved.append(sum(sizes))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
    assert saved[1] < 0.5 * saved[0]  # activations kept for backward
