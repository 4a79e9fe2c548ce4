"""TimeSformer weights from the official `.pyth`, Hugging Face TimeSformer, a timm image ViT, or
our own checkpoint. Key layouts and what is resized: docs/WEIGHTS.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from pipeline.model.timesformer import TimeSformer, TimeSformerConfig
from pipeline.model.weights.common import (
    LoadReport, Source, StateDict, WeightError, check_tensors, fit_expected, read_hf_folder, read_state,
    resize_pos_embed, resize_time_embed, source_name,
)


def fit_state_dict(
    source: StateDict,
    cfg: TimeSformerConfig,
    report: LoadReport,
    *,
    derive: Mapping[str, str] | None = None,
    fresh_ok: set[str] | frozenset[str] = frozenset(),
    drop_ok: set[str] | frozenset[str] = frozenset(),
) -> StateDict:
    """Fit `source` (already in our key names) to `TimeSformer(cfg)`, or raise `WeightError`.

    `pos_embed` is resampled on the 2-D patch grid and `time_embed` over time when their sizes
    differ; the rest is `fit_expected` (derived, fresh, dropped keys, a head of another class count).
    """
    resize = {"pos_embed": lambda p: resize_pos_embed(p, cfg.grid),
              "time_embed": lambda t: resize_time_embed(t, cfg.num_frames)}
    return fit_expected(source, TimeSformer(cfg).state_dict(), report, f"TimeSformer({cfg.attention})",
                        resize=resize, derive=derive, fresh_ok=fresh_ok, drop_ok=drop_ok)


def _space_only_drop(cfg: TimeSformerConfig) -> set[str]:
    """A space-only model has no `time_embed`: a checkpoint's one is dropped (reported)."""
    return {"time_embed"} if cfg.attention == "space_only" else set()


# ---------------------------------------------------------------------------- official


def load_official(src: Source, cfg: TimeSformerConfig) -> tuple[StateDict, LoadReport]:
    """An official TimeSformer checkpoint (`*.pyth`: {"model_state": {"model.<key>": ...}, ...}).

    Accepts the whole checkpoint, its `model_state`, or a plain state dict; the `model.` prefix is
    stripped. `time_embed` in a space-only checkpoint is dropped (reported).
    """
    name = source_name(src, "official state dict")
    obj = read_state(src)
    state = check_tensors(obj.get("model_state", obj), name)
    state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
    report = LoadReport(source=name)
    return fit_state_dict(state, cfg, report, drop_ok=_space_only_drop(cfg)), report


def load_ours(src: str | Path, cfg: TimeSformerConfig) -> tuple[StateDict, LoadReport]:
    """The `state_dict` of a `pipeline.model.save` checkpoint, fitted like an official state dict
    (resized to `cfg`, a head of another class count re-initialised; reported)."""
    from pipeline import model as models

    return load_official(models.read_checkpoint(str(src))["state_dict"], cfg)


# ---------------------------------------------------------------------------- Hugging Face

# (Hugging Face prefix, our prefix); `{i}` is the block index. Whole names end without a dot.
_HF_NAMES: list[tuple[str, str]] = [
    ("timesformer.embeddings.cls_token", "cls_token"),
    ("timesformer.embeddings.position_embeddings", "pos_embed"),
    ("timesformer.embeddings.time_embeddings", "time_embed"),
    ("timesformer.embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("timesformer.encoder.layer.{i}.layernorm_before.", "blocks.{i}.norm1."),
    ("timesformer.encoder.layer.{i}.attention.attention.qkv.", "blocks.{i}.attn.qkv."),
    ("timesformer.encoder.layer.{i}.attention.output.dense.", "blocks.{i}.attn.proj."),
    ("timesformer.encoder.layer.{i}.temporal_layernorm.", "blocks.{i}.temporal_norm1."),
    ("timesformer.encoder.layer.{i}.temporal_attention.attention.qkv.", "blocks.{i}.temporal_attn.qkv."),
    ("timesformer.encoder.layer.{i}.temporal_attention.output.dense.", "blocks.{i}.temporal_attn.proj."),
    ("timesformer.encoder.layer.{i}.temporal_dense.", "blocks.{i}.temporal_fc."),
    ("timesformer.encoder.layer.{i}.layernorm_after.", "blocks.{i}.norm2."),
    ("timesformer.encoder.layer.{i}.intermediate.dense.", "blocks.{i}.mlp.fc1."),
    ("timesformer.encoder.layer.{i}.output.dense.", "blocks.{i}.mlp.fc2."),
    ("timesformer.layernorm.", "norm."),
    ("classifier.", "head."),
]


def _rename(key: str, pairs: list[tuple[str, str]]) -> str | None:
    """Rename `key` by the first (from, to) prefix template that matches it; None when none does."""
    for src, dst in pairs:
        pattern = "^" + re.escape(src).replace(re.escape("{i}"), r"(?P<i>\d+)") + ("" if src.endswith(".") else "$")
        m = re.match(pattern, key)
        if m:
            return dst.format(i=m.groupdict().get("i")) + key[m.end():]
    return None


def hf_key_to_official(key: str) -> str:
    """`timesformer.encoder.layer.3.temporal_dense.weight` -> `blocks.3.temporal_fc.weight`."""
    new = _rename(key, _HF_NAMES)
    if new is None:
        raise WeightError(f"unknown Hugging Face TimeSformer key {key!r}")
    return new


def official_key_to_hf(key: str) -> str:
    """Inverse of `hf_key_to_official` (to export into `TimesformerForVideoClassification`)."""
    new = _rename(key, [(ours, hf) for hf, ours in _HF_NAMES])
    if new is None:
        raise WeightError(f"no Hugging Face name for {key!r}")
    return new


def load_hf(src: Source, cfg: TimeSformerConfig) -> tuple[StateDict, LoadReport]:
    """A Hugging Face `TimesformerForVideoClassification`: a state dict, a weights file
    (`.safetensors` or torch) or a `save_pretrained` folder.

    HF may keep `time_embeddings` for space-only models: dropped then (reported).
    """
    name = source_name(src, "Hugging Face state dict")
    raw = dict(src) if isinstance(src, Mapping) else read_hf_folder(src)[0]
    state = check_tensors(raw, name)
    renamed = {hf_key_to_official(k): v for k, v in state.items()}
    report = LoadReport(source=name)
    return fit_state_dict(renamed, cfg, report, drop_ok=_space_only_drop(cfg)), report


# ---------------------------------------------------------------------------- timm image ViT


def _timm_derivations(cfg: TimeSformerConfig) -> dict[str, str]:
    """Which of our keys an image ViT lacks, and the spatial key each one starts from."""
    derive = {}
    prefixes = {
        "divided": ["temporal_attn", "temporal_norm1"],
        "axial": ["temporal_attn", "temporal_norm1", "width_attn", "width_norm1"],
        "local_global": ["local_attn", "local_norm1"],
    }.get(cfg.attention, [])
    for i in range(cfg.depth):
        for p in prefixes:
            src = "attn" if p.endswith("attn") else "norm1"
            for leaf in (["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"] if src == "attn" else ["weight", "bias"]):
                derive[f"blocks.{i}.{p}.{leaf}"] = f"blocks.{i}.{src}.{leaf}"
    return derive


def load_timm_vit(src: Source, cfg: TimeSformerConfig) -> tuple[StateDict, LoadReport]:
    """An ImageNet ViT in timm's `vit_base_patch16_224` layout -> TimeSformer init (official recipe).

    Spatial weights are copied; temporal (and the extra schemes') attention and norms start from
    the block's spatial `attn` / `norm1`; `temporal_fc` and `time_embed` start at zero (the model's
    own init); `pos_embed` is resampled to the grid; a head of another class count (or none, for a
    backbone) leaves the model's fresh head (reported).
    Keys of a timm checkpoint with `fc_norm` / `pre_logits` are errors (other ViT variants).
    """
    name = source_name(src, "timm ViT state dict")
    obj = read_state(src)
    state = check_tensors(obj.get("model", obj.get("state_dict", obj)), name)
    report = LoadReport(source=name)
    fresh = {f"blocks.{i}.temporal_fc.{leaf}" for i in range(cfg.depth) for leaf in ("weight", "bias")}
    fresh |= {"time_embed", "head.weight", "head.bias"}  # a backbone without a head is fine
    return fit_state_dict(state, cfg, report, derive=_timm_derivations(cfg), fresh_ok=fresh), report


def hf_vit_to_timm(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A Hugging Face `ViTModel` / `ViTForImageClassification` state dict in timm's ViT layout.

    Reads both key layouts: transformers 4.x (`vit.encoder.layer.i.attention.attention.query`, ...)
    and 5.x (`layers.i.attention.q_proj`, `layers.i.mlp.fc1`, ...). Separate query/key/value
    projections are concatenated into `qkv`; a pooler is not part of timm's layout and is an error
    (build the HF model with `add_pooling_layer=False`).
    """
    layer = r"^(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)\."
    rules = [
        (r"^(?:vit\.)?embeddings\.cls_token$", "cls_token"),
        (r"^(?:vit\.)?embeddings\.position_embeddings$", "pos_embed"),
        (r"^(?:vit\.)?embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
        (layer + r"layernorm_before\.", r"blocks.\1.norm1."),
        (layer + r"layernorm_after\.", r"blocks.\1.norm2."),
        (layer + r"attention\.(?:output\.dense|o_proj)\.", r"blocks.\1.attn.proj."),
        (layer + r"(?:intermediate\.dense|mlp\.fc1)\.", r"blocks.\1.mlp.fc1."),
        (layer + r"(?:output\.dense|mlp\.fc2)\.", r"blocks.\1.mlp.fc2."),
        (r"^(?:vit\.)?layernorm\.", "norm."),
        (r"^classifier\.", "head."),
    ]
    qkv_key = layer + r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$"
    out: StateDict = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.match(qkv_key, key)
        if m:
            part = m.group(2)[0]  # q / k / v
            qkv.setdefault(f"blocks.{m.group(1)}.attn.qkv.{m.group(3)}", {})[part] = value
            continue
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise WeightError(f"unknown Hugging Face ViT key {key!r}")
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise WeightError(f"{key}: incomplete query/key/value ({sorted(parts)})")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)  # [3D, D] or [3D]
    return out
