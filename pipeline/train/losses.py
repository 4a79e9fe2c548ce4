"""Losses on soft targets: label smoothing and mixup (pure torch).

    targets = soft_targets(labels, num_classes, smoothing)
    x, targets = mixup(x, targets, *sample_mixup(alpha, len(labels), np_rng))
    loss = soft_cross_entropy(logits, targets)

Mixup mixes the normalised float clips (`pipeline.model.forward.model_input`), not the uint8 frames.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """int64 [B] -> float [B, C]: one-hot with `smoothing` spread uniformly over all classes."""
    one_hot = F.one_hot(labels, num_classes).float()
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy against soft targets (float [B, C] each)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def sample_mixup(alpha: float, batch: int, rng: np.random.Generator) -> tuple[float, torch.Tensor]:
    """(lam ~ Beta(alpha, alpha), a random permutation of the batch), drawn from `rng` only."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(batch))
    return lam, perm


def mixup(x: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each clip and its soft target with the clip `perm[i]`: lam * a + (1 - lam) * b."""
    return lam * x + (1.0 - lam) * x[perm], lam * targets + (1.0 - lam) * targets[perm]
