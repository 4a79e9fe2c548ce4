"""What both model families share: softmax attention and stochastic depth (no Ray).

    out = attention(q, k, v, dropout=0.0, impl="auto")   # [..., L, head_dim] -> [..., L, head_dim]
    x = x + drop_path(branch, drop_path_mask(branch, p, training))

`impl` is the models' `attn_impl` config field: "sdpa" is `F.scaled_dot_product_attention`, "math"
the same math written out, and "auto" (the default of both families) writes it out on CPU for
sequences of at most `SHORT_SEQUENCE` tokens (divided TimeSformer's temporal step: many groups of
T frames), where batched matmuls beat SDPA's CPU kernel ~2.7x forward + backward
(docs/BENCHMARKS.md, "Model"), and uses SDPA everywhere else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ATTN_IMPLS = ("auto", "sdpa", "math")
SHORT_SEQUENCE = 16  # "auto": on CPU, attention over at most this many tokens is written out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, dropout: float, impl: str) -> torch.Tensor:
    """Softmax attention on [..., L, head_dim] tensors; `dropout` on the weights (0 in eval)."""
    if impl == "sdpa" or (impl == "auto" and not (q.device.type == "cpu" and q.shape[-2] <= SHORT_SEQUENCE)):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    weights = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # [..., Lq, Lk]
    return F.dropout(weights.softmax(dim=-1), p=dropout) @ v


def check_attn_impl(impl: str) -> None:
    """The config check both families run on `attn_impl`."""
    if impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {list(ATTN_IMPLS)}, got {impl!r}")


def drop_path_mask(x: torch.Tensor, p: float, training: bool) -> torch.Tensor | None:
    """Stochastic depth keep-mask for the samples of `x` [B, ...]: [B] of 0 or 1/(1-p); None when off.

    One mask per residual branch; a branch split into parts (TimeSformer's cls token and patches)
    applies the same mask to each.
    """
    if not training or p == 0.0:
        return None
    # a comparison, not bernoulli_(1 - p): torch.compile then keeps p symbolic (one graph for all rates)
    return (torch.rand(x.shape[0], device=x.device) >= p).to(x.dtype) / (1.0 - p)


def drop_path(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Apply a `drop_path_mask` [B] to `x` [B, ...] (identity for None)."""
    return x if mask is None else x * mask.view(-1, *([1] * (x.ndim - 1)))
