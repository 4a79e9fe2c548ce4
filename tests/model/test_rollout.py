"""Attention rollout: hand-computed cases, the hooked plain-math weights, every scheme's maps."""

from __future__ import annotations

import pytest
import torch

from pipeline.model import create
from pipeline.model.rollout import (
    attention_probs, capture, explain, model_layout, rollout, timesformer_layout, vivit_layout,
)
from pipeline.model.timesformer import ATTENTIONS


def clip(b: int = 2, t: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, t, size, size, generator=torch.Generator().manual_seed(seed))


def test_divided_rollout_equals_a_hand_computation():
    """T = 2 frames of one patch; tokens cls, p0 (frame 0), p1 (frame 1); one divided block.

    Spatial step (cls joins each frame, its rows averaged over the frames), with the residual:
      cls row = 0.5 e_cls + 0.5 * mean(A_s0[cls], A_s1[cls])
              = cls 0.5 + 0.5 * (0.5 + 0.9) / 2 = 0.85,  p0 0.5 * 0.5 / 2 = 0.125,  p1 0.5 * 0.1 / 2 = 0.025
    Temporal step (cls untouched): p0 row = 0.5 e_p0 + 0.5 (0.8, 0.2) = (0.9, 0.1); p1 row = (0.2, 0.8)
      r = (0.85, 0.125, 0.025) M_t: p0 = 0.125 * 0.9 + 0.025 * 0.2 = 0.1175, p1 = 0.125 * 0.1 + 0.025 * 0.8 = 0.0325
    Map = (0.1175, 0.0325) / 0.15.
    """
    layout = timesformer_layout("divided", t=2, h=1, w=1)
    a_t = torch.tensor([[[[0.8, 0.2], [0.4, 0.6]]]])  # [B, G = 1 position, T, T]
    a_s = torch.tensor([[[[0.5, 0.5], [0.3, 0.7]], [[0.9, 0.1], [0.2, 0.8]]]])  # [B, G = 2 frames, 1+1, 1+1]
    steps = [[(layout.roles["blocks.*.temporal_attn"], a_t)], [(layout.roles["blocks.*.attn"], a_s)]]
    maps = rollout(layout, steps)
    assert maps.shape == (1, 2, 1, 1)
    assert torch.allclose(maps.flatten(), torch.tensor([0.1175, 0.0325]) / 0.15, atol=1e-6)


def test_factorised_dot_product_mixes_the_two_head_halves_equally():
    """ViViT Model 4, nt = 2 frames of 2 tokens (ids (t, n) -> 2t + n); start = the token mean.
    Spatial heads attend within a frame, temporal heads within a position; a token is in one group
    of each, so its row is 0.5 * spatial + 0.5 * temporal, then 0.5 I + 0.5 that."""
    layout = vivit_layout(4, nt=2, gh=1, gw=2)
    a_s = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]])  # frame 0 -> token 0; frame 1 -> token 3
    a_t = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]]])  # every position -> frame 1
    maps = rollout(layout, [[(layout.roles["blocks.*.attn"], a_s), (layout.roles["blocks.*.attn#time"], a_t)]])
    # dense rows (ids 0..3 = (t0 n0), (t0 n1), (t1 n0), (t1 n1)): M = 0.5 I + 0.25 S + 0.25 T
    s = torch.tensor([[1.0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]])
    t = torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    m = 0.5 * torch.eye(4) + 0.25 * s + 0.25 * t
    expected = torch.full((4,), 0.25) @ m
    assert torch.allclose(maps.flatten(), expected / expected.sum(), atol=1e-6)


def test_plain_math_weights_reproduce_the_sdpa_output():
    """With one head, proj(probs @ v) is the module's own (SDPA) output: the hooked weights are the
    ones the model used."""
    model = create("debug", num_heads=1).eval()
    attn = model.blocks[0].attn
    x = torch.randn(3, 7, 64)
    with torch.no_grad():
        v = attn.qkv(x)[..., 128:]
        assert torch.allclose(attn.proj(attention_probs(attn, x) @ v), attn(x), atol=1e-5)


@pytest.mark.parametrize("attention", ["divided", "joint", "space_only"])
def test_uniform_attention_gives_a_uniform_map(attention):
    """Zero q and k: every group attends uniformly, every patch is symmetric -> a flat map."""
    model = create("debug", attention=attention).eval()
    for name, p in model.named_parameters():
        if "qkv" in name:
            p.data.zero_()
    with torch.no_grad():
        _, maps = explain(model, clip(b=1))
    assert torch.allclose(maps, torch.full_like(maps, 1 / maps[0].numel()), atol=1e-6)


def test_hooks_record_each_step_and_go_away():
    model = create("debug", attention="divided").eval()
    x = clip(b=2)
    layout = model_layout(model, tuple(x.shape))
    with torch.no_grad(), capture(model, layout, batch=2) as steps:
        logits = model(x)
    # 2 blocks x (temporal, spatial); temporal groups: 16 positions x 4 frames
    assert [s[0][1].shape for s in steps] == [(2, 16, 4, 4), (2, 4, 17, 17)] * 2
    assert all(not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), logits)


@pytest.mark.parametrize("family,kw", [("debug", dict(attention=a)) for a in ATTENTIONS] + [
    ("vivit_debug", dict(model=m, tokenizer=tok)) for m in (1, 2, 3, 4) for tok in ("uniform", "tubelet")])
def test_every_scheme_maps_sum_to_one_and_features_are_pre_head(family, kw):
    model = create(family, **kw).eval()
    x = clip(b=2)
    with torch.no_grad():
        feats, maps = explain(model, x)
        assert torch.allclose(feats, model.forward_features(x), atol=1e-5)
        assert torch.allclose(model.head(feats), model(x), atol=1e-5)
    frames = 2 if kw.get("tokenizer") == "tubelet" else 4  # tubelets of 2 frames: T' = 4 / 2
    assert maps.shape == (2, frames, 4, 4) and maps.dtype == torch.float32
    assert (maps >= 0).all() and torch.allclose(maps.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-5)


def _dense_rollout(layout, steps) -> torch.Tensor:
    """The same composition with explicit [n, n] matrices per step and clip, multiplied out."""
    n, b = layout.n_tokens, steps[0][0][1].shape[0]
    total = torch.eye(n, dtype=torch.float64).expand(b, n, n)
    for step in steps:  # R = M_K ... M_1
        m = torch.zeros(b, n, n, dtype=torch.float64)
        count = torch.zeros(n, dtype=torch.float64)
        for ids, attn in step:
            for g in range(ids.shape[0]):
                count[ids[g]] += 1
                m[:, ids[g][:, None], ids[g][None, :]] += attn[:, g].double()
        m = 0.5 * m / count.clamp(min=1)[None, :, None]
        m += torch.diag(torch.where(count > 0, 0.5, 1.0))
        total = m @ total
    r = layout.start.double() @ total  # [B, n]
    maps = r[:, layout.patches]
    return (maps / maps.sum(dim=(1, 2, 3), keepdim=True)).float()


@pytest.mark.parametrize("family,kw", [("debug", dict(attention=a, image_size=16)) for a in ATTENTIONS] + [
    ("vivit_debug", dict(model=m, image_size=16)) for m in (1, 2, 3, 4)])
def test_row_vector_rollout_equals_the_product_of_dense_matrices(family, kw):
    model = create(family, **kw).eval()
    x = clip(b=2, size=16)
    layout = model_layout(model, tuple(x.shape))
    with torch.no_grad(), capture(model, layout, batch=2) as steps:
        model(x)
    assert torch.allclose(rollout(layout, steps), _dense_rollout(layout, steps), atol=1e-6)
