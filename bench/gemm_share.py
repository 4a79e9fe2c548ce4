"""How much of a step is matrix multiplies: the ceiling of any speedup over a peer with the same GEMMs.

    share = gemm_share(lambda: runner.step(True))     # 0.87: 87 % of the step's CPU time is GEMMs
    ceiling(peer_s=12.5, our_s=11.9, our_share=0.87)  # 1.21x: ours with nothing but its GEMMs

Two models with the same multiply-accumulates run the same GEMMs; when both are at the library's
speed, the only room left is what surrounds them (norms, GELU, adds, copies, attention kernels).
Used by `bench/model.py` (`--breakdown`) on the CPU: one profiled step per model, after the timed
ones (the profiler's own overhead stays out of the timings).
"""

from __future__ import annotations

from typing import Callable

from torch.profiler import ProfilerActivity, profile

# ATen's matrix multiplies (linear layers lower to addmm / mm, attention written out to bmm)
GEMM_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"})


def gemm_share(step: Callable[[], None]) -> float:
    """Share of one `step`'s CPU time (sum of every op's self time) spent in GEMM kernels."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    return gemm / total if total > 0 else 0.0


def ceiling(peer_s: float, our_s: float, our_share: float) -> float:
    """Peer step time over our GEMM time: our speedup if everything but our GEMMs cost nothing."""
    return peer_s / (our_s * our_share)
