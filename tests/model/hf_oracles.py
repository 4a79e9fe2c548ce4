"""Tiny oracle models from Hugging Face `transformers` (built offline with random weights)."""

from __future__ import annotations

import torch
from torch import nn

HF_ATTENTION = {"divided": "divided_space_time", "joint": "joint_space_time", "space_only": "space_only"}
TINY = dict(image_size=32, patch_size=8, num_frames=4, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=256)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (LayerNorm weights too), so no zero-init hides a wiring bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1.0 if ("norm" in name and p.ndim == 1) else 0.3
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def hf_timesformer(attention: str, num_labels: int = 4, seed: int = 0) -> nn.Module:
    """A random HF TimesformerForVideoClassification shaped like the `debug` preset."""
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    cfg = TimesformerConfig(**TINY, num_labels=num_labels, attention_type=HF_ATTENTION[attention])
    return randomize(TimesformerForVideoClassification(cfg), seed).eval()


def hf_vit(seed: int = 0) -> nn.Module:
    """A random HF ViTModel (no pooler, LayerNorm eps 1e-6) shaped like the `debug` preset."""
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=256, layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True)
    return randomize(ViTModel(cfg, add_pooling_layer=False), seed).eval()
