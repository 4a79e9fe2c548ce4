"""Step costs counted on meta tensors: the paper's forward MACs, training ~3x, GEMM shapes that add up."""

from __future__ import annotations

import pytest
import torch

from pipeline.model import create
from pipeline.model.flops import step_flops, step_gemms


def test_training_step_counts_forward_and_backward_and_gemms_cover_it():
    with torch.device("meta"):
        model = create("timesformer_base", depth=1)  # divided, 8 x 224, one block
    shape = (1, 3, 8, 224, 224)
    infer, train = step_flops(model, shape, train=False), step_flops(model, shape, train=True)
    # one block of the 12 that make the paper's 195.8 GMACs, plus the patch embedding (0.92 GMACs)
    assert infer / 2e9 == pytest.approx((195.8 - 0.92) / 12 + 0.92, abs=0.06)
    # backward ~ 2 x forward, less the patch embedding's input gradient (the clip needs none) and the
    # last block's patch MLP (only the cls token reaches the head): a third of the MACs with one block
    assert 2.0 < train / infer < 3.0
    gemms = step_gemms(model, shape, train=True)
    gemm_flops = sum(2 * b * m * k * n * count for (b, m, k, n), count in gemms.items())
    assert 0.9 * train < gemm_flops < train  # all but the convolution (patch embedding)
    assert (1, 1568, 768, 2304) in gemms  # the temporal qkv: 196 positions x 8 frames, cls apart
