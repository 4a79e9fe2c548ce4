"""What a model step costs, counted on meta tensors (no memory, no compute; no Ray).

    flops = step_flops(model, (1, 3, 8, 224, 224), train=True)    # forward + backward FLOPs
    gemms = step_gemms(model, (1, 3, 8, 224, 224), train=True)    # {(batch, m, k, n): count}

FLOPs are `torch.utils.flop_counter`'s: 2 per multiply-accumulate of the matrix multiplies,
convolutions and attention (SDPA counts its QK^T and AV products), forward and, with `train`,
backward (the input clip needs no gradient, so the patch embedding's input gradient is not
counted). Element-wise work (norms, GELU, adds) is not counted: it is what a step spends beyond
the MACs. `bench/model.py` divides these FLOPs by the step time for the achieved FLOP/s, and times
plain matmuls of the `step_gemms` shapes for the machine's practical peak.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _meta_copy(model: nn.Module) -> nn.Module:
    """The model's architecture on the meta device (its weights are not copied)."""
    with torch.device("meta"):
        return type(model)(copy.deepcopy(model.config))


def _run(model: nn.Module, shape: tuple[int, ...], train: bool) -> None:
    x = torch.empty(shape, device="meta")
    model.train(train)
    if train:
        model(x).sum().backward()
    else:
        with torch.no_grad():
            model(x)


def step_flops(model: nn.Module, shape: tuple[int, ...], *, train: bool) -> int:
    """FLOPs of one step of `model`'s architecture on an input of `shape` [B, 3, T, H, W]."""
    counter = FlopCounterMode(display=False)
    with counter:
        _run(_meta_copy(model), shape, train)
    return counter.get_total_flops()


class _GemmShapes(TorchDispatchMode):
    """Records (batch, m, k, n) of every mm / addmm / bmm / baddbmm."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: Counter[tuple[int, int, int, int]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default):
            a, b = (args[1], args[2]) if func in (aten.addmm.default, aten.baddbmm.default) else args[:2]
            batch = a.shape[0] if a.ndim == 3 else 1
            self.shapes[(batch, a.shape[-2], a.shape[-1], b.shape[-1])] += 1
        return func(*args, **(kwargs or {}))


def step_gemms(model: nn.Module, shape: tuple[int, ...], *, train: bool) -> dict[tuple[int, int, int, int], int]:
    """The plain matrix multiplies of one step: {(batch, m, k, n): count} (eager math; SDPA's
    products are not in it)."""
    mode = _GemmShapes()
    with mode:
        _run(_meta_copy(model), shape, train)
    return dict(mode.shapes)
