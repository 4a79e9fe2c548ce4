"""Soft targets, label smoothing and mixup (pipeline.train.losses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.train.losses import mixup, sample_mixup, soft_cross_entropy, soft_targets


def test_label_smoothing_targets_and_loss():
    t = soft_targets(torch.tensor([0, 2]), 4, smoothing=0.1)
    assert t.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert t[0].tolist() == pytest.approx([0.925, 0.025, 0.025, 0.025])
    logits = torch.randn(2, 4)
    hard = soft_cross_entropy(logits, soft_targets(torch.tensor([0, 2]), 4))
    assert hard.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).item(), rel=1e-5)


def test_mixup_mixes_inputs_and_targets_with_the_same_weights():
    x = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1, 1).expand(3, 3, 2, 2, 2).clone()
    y = soft_targets(torch.tensor([0, 1, 2]), 3)
    perm = torch.tensor([2, 0, 1])
    xm, ym = mixup(x, y, 0.75, perm)
    assert xm[0].flatten()[0].item() == pytest.approx(0.75 * 0 + 0.25 * 2)
    assert ym[0].tolist() == pytest.approx([0.75, 0.0, 0.25])
    assert ym.sum(1).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_sample_mixup_is_reproducible_from_the_generator():
    a = sample_mixup(0.4, 8, np.random.default_rng(3))
    b = sample_mixup(0.4, 8, np.random.default_rng(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert 0.0 <= a[0] <= 1.0 and sorted(a[1].tolist()) == list(range(8))
