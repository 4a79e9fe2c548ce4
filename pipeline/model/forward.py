"""The one path from uint8 clips to logits, used by training, evaluation and inference (no Ray).

    logits = clip_logits(model, frames)      # frames uint8 [B, T, H, W, 3] on any device

    x = model_input(model, frames)           # the same in two halves, for training, which
    logits = forward_logits(model, x)        # mixes the normalised clips (mixup) in between

Clips travel as uint8 (4x smaller than float) and are normalised on the model's device with the
model's own mean/std, in the layout the models take (`[B, 3, T, H, W]`). Precision: "auto" runs
bf16 autocast on CUDA and fp32 elsewhere; "bf16" / "fp16" autocast on CUDA only; "fp32" never.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from einops import rearrange
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def to_model_input(frames: torch.Tensor, mean: Sequence[float] = (0.45, 0.45, 0.45),
                   std: Sequence[float] = (0.225, 0.225, 0.225), dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> normalised float [B, 3, T, H, W] on the frames' device."""
    if dtype is None:
        dtype = torch.float32
    if frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [B, T, H, W, 3], got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    x = rearrange(frames, "b t h w c -> b c t h w").to(dtype).div_(255.0)  # [B, 3, T, H, W]
    m = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, 3, 1, 1, 1)
    s = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, 3, 1, 1, 1)
    return (x - m) / s


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The autocast context of `precision` on `device` (a no-op off CUDA and for "fp32")."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dtype = {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if device.type != "cuda" or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def unwrap(net: nn.Module) -> nn.Module:
    """The model inside a DDP (or similar) wrapper; the model itself otherwise."""
    return net.module if hasattr(net, "module") else net


def model_input(net: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """uint8 clips [B, T, H, W, 3] -> normalised float [B, 3, T, H, W] on the model's device,
    with the model config's mean/std; `net` may be wrapped (DDP). A model without parameters
    takes the frames where they are."""
    model = unwrap(net)
    param = next(model.parameters(), None)
    device = frames.device if param is None else param.device
    mean = getattr(model.config, "mean", (0.45, 0.45, 0.45))
    std = getattr(model.config, "std", (0.225, 0.225, 0.225))
    return to_model_input(frames.to(device, non_blocking=True), mean, std)


def forward_logits(net: nn.Module, x: torch.Tensor, *, precision: str = "auto") -> torch.Tensor:
    """`net(x)` for a model input `x` (from `model_input`) under the autocast of `precision`."""
    with autocast(x.device, precision):
        return net(x)


def clip_logits(net: nn.Module, frames: torch.Tensor, *, precision: str = "auto") -> torch.Tensor:
    """Logits [B, C] of uint8 clips [B, T, H, W, 3]; `net` may be wrapped (DDP).

    The frames move to the model's device; normalisation uses the model config's mean/std.
    """
    return forward_logits(net, model_input(net, frames), precision=precision)
