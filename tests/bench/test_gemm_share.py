"""The GEMM share of a step and the speedup ceiling it leaves (bench/gemm_share.py)."""

from __future__ import annotations

import pytest
import torch

from bench.gemm_share import ceiling, gemm_share


def test_a_step_of_matmuls_is_nearly_all_gemm_and_an_elementwise_step_is_not():
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    x = torch.randn(2_000_000)
    assert gemm_share(lambda: [a @ b for _ in range(20)]) > 0.9
    assert gemm_share(lambda: [torch.nn.functional.gelu(x) for _ in range(5)]) == 0.0
    lin = torch.nn.Linear(256, 256)
    mixed = gemm_share(lambda: [torch.nn.functional.gelu(lin(a)) for _ in range(5)])
    assert 0.0 < mixed < 1.0  # linear (addmm) counts, GELU does not


def test_ceiling_is_the_peer_step_over_our_gemm_time():
    assert ceiling(peer_s=12.0, our_s=10.0, our_share=0.8) == pytest.approx(1.5)
    assert ceiling(peer_s=10.0, our_s=10.0, our_share=1.0) == pytest.approx(1.0)
