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
    """(state_dict fitted to `model`, load report) from an official / HF / timm / our checkpoint."""
    from pipeline import model as models
    from pipeline.model import weights

    if getattr(model, "family", None) != "timesformer":
        raise ConfigError(f"model.init: weight import supports TimeSformer only, not {model.family!r}")
    if init.source == "ours":
        source: Any = models.read_checkpoint(init.path)["state_dict"]
        return weights.load_official(source, model.config)
    loader = {"official": weights.load_official, "hf": weights.load_hf, "timm": weights.load_timm_vit}[init.source]
    return loader(init.path, model.config)


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
