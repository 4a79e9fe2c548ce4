"""Opt-in `torch.compile` of a model's transformer blocks, eager where the compiler cannot run (no Ray).

    compiled = compile_blocks(model, device)     # in place; False (one warning) when it fell back to eager

Regional compilation: each block (`model.blocks`, and ViViT's `temporal_blocks`) is compiled with
`nn.Module.compile`, so
- the state_dict keys do not change (no `_orig_mod.` prefix): checkpoints save and load as before;
- the blocks share one compiled graph (same code; their weights are graph inputs), so compiling a
  12-block model costs about one block's compile, not twelve;
- activation checkpointing wraps a compiled block exactly as it wraps an eager one (the model's
  `_run` calls `checkpoint(blk, ...)`), and DDP (Ray Train's `prepare_model`, applied after this)
  still gets its gradients block by block in backward, so its all-reduce overlaps as in eager;
- the patch embedding, position embeddings, final norm and head stay eager (a few % of the MACs).

Inductor fuses what surrounds the matrix multiplies (layer norms, GELU, residual adds, drop-path,
the copies around attention groups) into a few generated loops; the multiplies and SDPA stay the
library kernels. bf16 autocast (on CUDA) is traced into the graph like any other op.

Shapes: each block's tensor inputs get a symbolic dim 0 (the batch, or batch x frames) before the
compiled call, so the first graph serves every batch size >= 2 (the last, short batch of an
inference run, a smaller eval batch); batch 1 gets its own graph (Dynamo specialises sizes 0 and
1). Train and eval compile apart (dropout and drop-path differ); per-block drop-path rates share
one train graph for rate > 0 (the models draw their masks by comparing with the rate).

Fallback: before compiling, a tiny function is compiled and run forward and backward on the
device (catches a missing C++ compiler on CPU, a missing Triton on GPU, an unsupported Python);
and if a block's compiled call still fails, every block of the model returns to eager. Either way
one warning says why, and the model runs eager.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_LISTS = ("blocks", "temporal_blocks")  # the nn.ModuleLists of transformer blocks, by family


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a TimeSformer or ViViT (unwrapped), in order."""
    out: list[nn.Module] = []
    for name in BLOCK_LISTS:
        out.extend(getattr(model, name, None) or [])
    return out


def compiler_problem(device: torch.device | str, backend: str = "inductor") -> str | None:
    """Why `torch.compile(backend=...)` cannot run on `device` here; None when it can."""
    device = torch.device(device)
    return _probe(device.type, backend)


@functools.cache
def _probe(device_type: str, backend: str) -> str | None:
    """Compile and run a tiny Linear -> LayerNorm -> GELU -> sum, forward and backward, once per process
    and device type (the toolchain's failures show here: a missing C++ compiler, Triton, ...)."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python / platform"
    lin = nn.Linear(8, 8).to(device_type)

    def tiny(x: torch.Tensor) -> torch.Tensor:
        return F.gelu(F.layer_norm(lin(x), (8,))).sum()

    try:
        torch.compile(tiny, backend=backend, fullgraph=True)(torch.randn(4, 8, device=device_type)).backward()
    except Exception as e:  # noqa: BLE001 - any failure of the toolchain means: run eager
        return _reason(e)
    return None


def _reason(e: BaseException) -> str:
    """`Type: first line` of an error, of the compiler's own error when Dynamo wrapped it."""
    e = getattr(e, "inner_exception", None) or e
    lines = [line for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def compile_blocks(model: nn.Module, device: torch.device | str, *, backend: str = "inductor",
                   mode: str | None = None) -> bool:
    """Compile the transformer blocks of `model` in place (see the module doc); True when compiled.

    Where the compiler cannot run, warns once and leaves the model eager (returns False).
    """
    blocks = blocks_of(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no transformer blocks to compile")
    problem = compiler_problem(device, backend)
    if problem is not None:
        _warn(f"torch.compile cannot run on {torch.device(device).type} ({problem}); the model runs eager")
        return False
    fallback = _Fallback(blocks)
    for blk in blocks:
        blk.compile(backend=backend, mode=mode, dynamic=None)
        blk._compiled_call_impl = fallback.guard(blk, blk._compiled_call_impl)
    return True


def is_compiled(model: nn.Module) -> bool:
    """Whether the blocks of `model` currently run compiled."""
    return any(getattr(blk, "_compiled_call_impl", None) is not None for blk in blocks_of(model))


class _Fallback:
    """Runs a model's blocks compiled until one compiled call fails; then all of them eager."""

    def __init__(self, blocks: list[nn.Module]):
        self.blocks = blocks

    def guard(self, blk: nn.Module, compiled: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            args = tuple(_batch_dynamic(a) for a in args)
            try:
                return compiled(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as e:  # the compiler's own failures only
                out = blk._call_impl(*args, **kwargs)  # a user error (bad shapes) raises again here
                self.to_eager(e)
                return out

        return call

    def to_eager(self, error: BaseException) -> None:
        for blk in self.blocks:
            blk._compiled_call_impl = None
        _warn(f"torch.compile failed ({_reason(error)}); the model runs eager")


def _batch_dynamic(x: Any) -> Any:
    """A block's tensor input, contiguous (the cls token enters the first block as a stride-0
    expand; later blocks get a real tensor: one stride for all) with a symbolic dim 0 (the batch,
    or batch x frames), so one graph serves every batch size (sizes 0 and 1 stay specialised)."""
    if isinstance(x, torch.Tensor) and x.dim() > 0:
        x = x.contiguous()
        torch._dynamo.maybe_mark_dynamic(x, 0)
    return x


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
