"""Attention rollout (Abnar & Zuidema 2020) for every TimeSformer and ViViT scheme (no Ray).

    feats, maps = explain(model, x)      # x [B, 3, T, H, W] -> pre-head features [B, D],
                                         # maps [B, T', h, w] (>= 0, each sums to 1)

How the weights are obtained. The models keep their fused SDPA path untouched; `capture` puts
forward hooks on the attention modules for one forward pass, and each hook recomputes that
module's attention probabilities in plain math from the module's own input
(`softmax(q k^T / sqrt(head_dim))`, `attention_probs`), averaged over heads. Nothing changes when
not explaining.

The composition (docs/EXPLAIN.md has the full derivation). Every attention step of every scheme
is "attend inside groups of tokens": a step is a list of `(groups [G, L] token ids, A [B, G, L, L])`
over one token index space per model (`TokenLayout`). A token in k groups of a step (the cls token of
divided attention is in all T frame groups) gets the mean of its k rows. With the residual, the
step's rollout matrix is `M = 0.5 I + 0.5 mean_g A_g` for tokens in some group and `I` for the
others (the temporal step leaves cls alone). MLPs and norms are per token (identity). The rollout
of the whole model is `M_K ... M_1`; we only need the row of the classification token (or, for
models without one, the mean-pooled feature: a uniform start over tokens), so it is carried as
one row vector `r <- r M_k` from the last step to the first. The map is `r` on the patch tokens,
renormalised to sum 1 (the mass left on learned cls tokens is dropped).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Iterator

import torch
from einops import rearrange
from torch import nn

Group = tuple[torch.Tensor, torch.Tensor]  # (token ids [G, L], attention [B, G, L, L])


@dataclass
class TokenLayout:
    """One model's token index space at one input size: which tokens each hooked module attends.

    `roles` maps a module role (its name with block numbers as `*`, e.g. `blocks.*.temporal_attn`)
    to its group ids `[G, L]` in the order the module sees its sequences (`(b g) l`);
    `patches` [T', h, w] are the ids of the input patch tokens; `start` [n_tokens] the rollout's
    first row (the classification token, or the pooled tokens).
    """

    n_tokens: int
    patches: torch.Tensor
    start: torch.Tensor
    roles: dict[str, torch.Tensor] = field(default_factory=dict)


def _onehot(n: int, *ids: int) -> torch.Tensor:
    v = torch.zeros(n)
    v[list(ids)] = 1.0 / len(ids)
    return v


def _with(head: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
    """Prepend per-group ids `head` [G] (a cls token) to groups `body` [G, L]."""
    return torch.cat([head.view(-1, 1).expand(body.shape[0], 1), body], dim=1)


def timesformer_layout(attention: str, t: int, h: int, w: int) -> TokenLayout:
    """Token ids of a TimeSformer on a t x h x w patch grid.

    divided / joint / local_global / axial: 0 = cls, patch (t, y, x) = 1 + (y w + x) t + t (the
    model's time-fastest order). space_only: cls of frame t = t, patches T + (y w + x) T + t.
    """
    from pipeline.model import timesformer as tsf

    off = t if attention == "space_only" else 1
    n = off + t * h * w
    grid = off + rearrange(torch.arange(h * w * t), "(h w t) -> t h w", h=h, w=w)  # [T, h, w]
    cls0 = torch.zeros(1, dtype=torch.long)

    def cut(pattern: str, **axes: int) -> torch.Tensor:  # grid -> [G, L] as grouped_attention cuts it
        return rearrange(grid[None, ..., None], pattern, **axes)[..., 0]

    if attention == "space_only":  # each frame its own image, its own cls; the cls outputs averaged
        return TokenLayout(n, grid, _onehot(n, *range(t)), {"blocks.*.attn": _with(torch.arange(t), cut(tsf.SPATIAL))})
    layout = TokenLayout(n, grid, _onehot(n, 0))
    if attention == "joint":  # one sequence [cls, patches in (h w t) order]
        layout.roles["blocks.*.attn"] = _with(cls0, rearrange(grid, "t h w -> 1 (h w t)"))
    elif attention == "divided":
        layout.roles["blocks.*.temporal_attn"] = cut(tsf.TEMPORAL)  # cls takes no part
        layout.roles["blocks.*.attn"] = _with(cls0.expand(t), cut(tsf.SPATIAL))  # cls in every frame
    elif attention == "local_global":
        st = 2 if t % 2 == 0 else 1
        local = cut(tsf.LOCAL, wy=2, wx=2, y=h // 2, x=w // 2)
        glob = cut(tsf.GLOBAL, t=t // st, st=st, sy=2, sx=2, y=h // 2, x=w // 2)
        layout.roles["blocks.*.local_attn"] = _with(cls0.expand(len(local)), local)
        layout.roles["blocks.*.attn"] = _with(cls0.expand(len(glob)), glob)
    elif attention == "axial":
        layout.roles["blocks.*.temporal_attn"] = cut(tsf.TEMPORAL)
        for role, pattern in (("blocks.*.width_attn", tsf.WIDTH), ("blocks.*.attn", tsf.HEIGHT)):
            groups = cut(pattern)
            layout.roles[role] = _with(cls0.expand(len(groups)), groups)
    else:
        raise ValueError(f"no rollout for attention {attention!r}")
    return layout


def vivit_layout(model: int, nt: int, gh: int, gw: int) -> TokenLayout:
    """Token ids of a ViViT on an nt x gh x gw token grid (tokens in (t h w) order).

    1: 0 = cls, tokens 1 + i. 2: 0 = the temporal cls, 1 + t = frame t's spatial cls (also the
    temporal encoder's input t: the same token), tokens 1 + nt + i. 3, 4: tokens i; the rollout
    starts from the token mean the head sees.
    """
    count = nt * gh * gw
    if model == 1:
        grid = 1 + torch.arange(count).view(nt, gh, gw)
        return TokenLayout(1 + count, grid, _onehot(1 + count, 0),
                    {"blocks.*.attn": _with(torch.zeros(1, dtype=torch.long), grid.view(1, -1))})
    if model == 2:
        grid = 1 + nt + torch.arange(count).view(nt, gh, gw)
        n = 1 + nt + count
        return TokenLayout(n, grid, _onehot(n, 0), {
            "blocks.*.attn": _with(1 + torch.arange(nt), rearrange(grid, "t h w -> t (h w)")),
            "temporal_blocks.*.attn": torch.arange(1 + nt).view(1, -1)})
    grid = torch.arange(count).view(nt, gh, gw)
    layout = TokenLayout(count, grid, torch.full((count,), 1.0 / count))
    spatial, temporal = rearrange(grid, "t h w -> t (h w)"), rearrange(grid, "t h w -> (h w) t")
    if model == 3:
        layout.roles.update({"blocks.*.attn": spatial, "blocks.*.temporal_attn": temporal})
    elif model == 4:  # one module, two kinds of groups: its spatial heads' and its temporal heads'
        layout.roles.update({"blocks.*.attn": spatial, "blocks.*.attn#time": temporal})
    else:
        raise ValueError(f"no rollout for ViViT model {model!r}")
    return layout


def model_layout(model: nn.Module, x_shape: tuple[int, ...]) -> TokenLayout:
    """The `TokenLayout` of `model` for an input of shape [B, 3, T, H, W]."""
    cfg = model.config
    t, hh, ww = x_shape[2:]
    if model.family == "timesformer":
        return timesformer_layout(cfg.attention, t, hh // cfg.patch_size, ww // cfg.patch_size)
    if model.family == "vivit":
        return vivit_layout(cfg.model, t // cfg.t, hh // cfg.patch_size, ww // cfg.patch_size)
    raise ValueError(f"no rollout for model family {model.family!r}")


# --------------------------------------------------------------------------- weights


def attention_probs(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The plain-math attention probabilities of an attention module (fused `qkv`, `num_heads`) on
    its input `x` [B', L, D], averaged over heads: [B', L, L], rows summing to 1."""
    q, k, _ = rearrange(attn.qkv(x).float(), "b l (three h e) -> three b h l e", three=3, h=attn.num_heads)
    return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1).mean(dim=1)


def factorised_probs(attn: nn.Module, x: torch.Tensor, nt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ViViT Model 4: (spatial heads' probabilities [B, nt, n, n], temporal heads' [B, n, nt, nt]),
    each averaged over its half of the heads."""
    half = attn.num_heads // 2
    q, k, _ = rearrange(attn.qkv(x).float(), "b (t n) (three h e) -> three b h t n e", three=3,
                        h=attn.num_heads, t=nt)
    scale = q.shape[-1] ** -0.5
    spatial = ((q[:, :half] @ k[:, :half].transpose(-2, -1)) * scale).softmax(dim=-1).mean(dim=1)
    qt, kt = (rearrange(z[:, half:], "b h t n e -> b h n t e") for z in (q, k))
    temporal = ((qt @ kt.transpose(-2, -1)) * scale).softmax(dim=-1).mean(dim=1)
    return spatial, temporal


def _role(name: str) -> str:
    return re.sub(r"\.\d+\.", ".*.", name)


@contextlib.contextmanager
def capture(model: nn.Module, layout: TokenLayout, batch: int) -> Iterator[list[list[Group]]]:
    """Hook the attention modules of `model` for the forward passes inside the block; yields the
    list of steps (in the order they run), each a list of `(ids [G, L], A [batch, G, L, L])`."""
    steps: list[list[Group]] = []
    handles = []

    def hook(role: str):
        def fn(module: nn.Module, args: tuple) -> None:
            with torch.no_grad():
                if role + "#time" in layout.roles:  # ViViT Model 4: both halves in one step
                    spatial, temporal = factorised_probs(module, args[0], args[1])
                    steps.append([(layout.roles[role], spatial.cpu()), (layout.roles[role + "#time"], temporal.cpu())])
                    return
                probs = attention_probs(module, args[0]).cpu()  # [(B G), L, L]; the rollout runs on the CPU
                steps.append([(layout.roles[role], rearrange(probs, "(b g) l m -> b g l m", b=batch))])
        return fn

    for name, module in model.named_modules():
        if _role(name) in layout.roles:
            handles.append(module.register_forward_pre_hook(hook(_role(name))))
    try:
        yield steps
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- rollout


def rollout(layout: TokenLayout, steps: list[list[Group]]) -> torch.Tensor:
    """Carry the start row back through `steps` (each `r <- r M`): maps [B, T', h, w], >= 0,
    each summing to 1 over the patch tokens."""
    batch = steps[0][0][1].shape[0] if steps else 1
    r = layout.start.to(torch.float64).expand(batch, -1).clone()  # [B, n_tokens]
    for step in reversed(steps):
        count = torch.zeros(layout.n_tokens, dtype=torch.float64)
        for ids, _ in step:
            count.index_add_(0, ids.reshape(-1), torch.ones(ids.numel(), dtype=torch.float64))
        keep = torch.where(count > 0, 0.5, 1.0)  # identity for tokens the step leaves alone
        share = r / count.clamp(min=1)  # a token in k groups: the mean of its k rows
        out = r * keep
        for ids, attn in step:
            u = share[:, ids]  # [B, G, L]
            v = torch.einsum("bgl,bglm->bgm", u, attn.to(torch.float64))  # [B, G, L]
            out.index_add_(1, ids.reshape(-1), 0.5 * v.reshape(batch, -1))
        r = out
    maps = r[:, layout.patches].clamp(min=0)  # [B, T', h, w]
    return (maps / maps.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1e-30)).float()


def explain(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-head features [B, D] and rollout maps [B, T', h, w] of a normalised input [B, 3, T, H, W]
    (one forward pass; call under `torch.no_grad()` / `inference_mode()` and `model.eval()`)."""
    layout = model_layout(model, tuple(x.shape))
    with capture(model, layout, x.shape[0]) as steps:
        feats = model.forward_features(x)
    return feats, rollout(layout, steps)
