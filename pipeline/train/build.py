"""The model and the optimizer of a training run.

    model = build_model(cfg.model, num_classes)     # fresh, or starting weights from cfg.model.init
    optimizer = build_optimizer(model, cfg.optim, lr)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.train.config import InitSection, ModelSection, OptimSection


def build_model(section: ModelSection, num_classes: int) -> nn.Module:
    """The model of `section` (fresh init, or weights from `section.init`, loaded strictly)."""
    from pipeline import model as models

    overrides = {"num_classes": num_classes, **section.overrides}
    if section.grad_checkpointing:
        overrides["grad_checkpointing"] = True
    model = models.create(section.preset, **overrides)
    if section.init is not None:
        state, report = load_init_weights(section.init, model)
        model.load_state_dict(state)
        print(f"[train] init weights: {report}", flush=True)
    return model


def load_init_weights(init: InitSection, model: nn.Module) -> tuple[dict[str, torch.Tensor], Any]:
    """(state_dict fitted to `model`, load report) through the weight loader table that
    `jobs.convert` uses too: official / hf / timm / ours for TimeSformer, hf / ours for ViViT."""
    from pipeline.model.weights import WeightError, load_weights, sources

    family = getattr(model, "family", None)
    if family is not None and init.source not in sources(family):
        raise ConfigError(f"model.init.source: {family} weights load from {sources(family)}, not {init.source!r}")
    try:
        return load_weights(model, init.source, init.path)
    except WeightError as e:
        raise ConfigError(f"model.init: {e}") from e


def build_optimizer(model: nn.Module, section: OptimSection, lr: float) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW; no weight decay on biases, norms and embeddings (1-D
    tensors and the cls/pos/time tokens), as in the official code."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed", "time_embed"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": section.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if section.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=section.momentum, nesterov=section.nesterov)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(section.betas))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
