"""TimeSformer weights from the official `.pyth`, Hugging Face TimeSformer, a timm image ViT, or
our own checkpoint. Key layouts and what is resized: docs/WEIGHTS.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from pipeline.model.timesformer import TimeSformer, TimeSformerConfig
from pipeline.model.weights.common import (
    LoadReport, Source, StateDict, WeightError, check_tensors, fit_expected, hf_id2label, hf_labels, read_hf_folder, read_state,
    rename_prefix, resize_pos_embed, resize_time_embed, source_name,
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


def hf_key_to_official(key: str) -> str:
    """`timesformer.encoder.layer.3.temporal_dense.weight` -> `blocks.3.temporal_fc.weight`."""
    new = rename_prefix(key, _HF_NAMES)
    if new is None:
        raise WeightError(f"unknown Hugging Face TimeSformer key {key!r}")
    return new


def official_key_to_hf(key: str) -> str:
    """Inverse of `hf_key_to_official` (to export into `TimesformerForVideoClassification`)."""
    new = rename_prefix(key, [(ours, hf) for hf, ours in _HF_NAMES])
    if new is None:
        raise WeightError(f"no Hugging Face name for {key!r}")
    return new


# HF `attention_type` <-> ours (HF TimeSformer has these three schemes only).
_HF_ATTENTION = {"divided_space_time": "divided", "joint_space_time": "joint", "space_only": "space_only"}


def hf_timesformer_config(hf_config: Mapping[str, Any], **overrides: Any) -> TimeSformerConfig:
    """Our `TimeSformerConfig` with the geometry of an HF `TimesformerConfig` dict (config.json):
    image / patch size, frames, width, depth, heads, MLP, attention type, layer-norm eps and the
    class count of `id2label`. `overrides` replace fields afterwards. Settings our model cannot
    express (non-square images or patches, an activation other than gelu) raise `WeightError`."""
    c = dict(hf_config)
    if c.get("model_type", "timesformer") != "timesformer":
        raise WeightError(f"config.json is for model_type {c.get('model_type')!r}, not 'timesformer'")
    size, patch = c.get("image_size", 224), c.get("patch_size", 16)
    size = (size, size) if isinstance(size, int) else tuple(size)
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    if size[0] != size[1] or patch[0] != patch[1]:
        raise WeightError(f"non-square image {size} or patch {patch} is not supported")
    if c.get("hidden_act", "gelu") != "gelu":
        raise WeightError(f"hidden_act {c.get('hidden_act')!r} has no equivalent here (TimeSformer uses gelu)")
    attention = _HF_ATTENTION.get(c.get("attention_type", "divided_space_time"))
    if attention is None:
        raise WeightError(f"attention_type {c.get('attention_type')!r} is not one of {sorted(_HF_ATTENTION)}")
    hidden = c.get("hidden_size", 768)
    labels = hf_labels(c)
    fields = dict(
        num_classes=len(labels) if labels else c.get("num_labels", 2), num_frames=c.get("num_frames", 8),
        image_size=size[0], patch_size=patch[0], in_chans=c.get("num_channels", 3), embed_dim=hidden,
        depth=c.get("num_hidden_layers", 12), num_heads=c.get("num_attention_heads", 12),
        mlp_ratio=c.get("intermediate_size", 3072) / hidden, qkv_bias=c.get("qkv_bias", True), attention=attention,
        layer_norm_eps=c.get("layer_norm_eps", 1e-6), drop_path_rate=float(c.get("drop_path_rate", 0.0)),
    )
    fields.update(overrides)
    return TimeSformerConfig(**fields)


def to_hf_timesformer(cfg: TimeSformerConfig, state: Mapping[str, torch.Tensor],
                      labels: list[str] | None = None) -> tuple[dict[str, Any], StateDict]:
    """(config.json, state dict) of the HF `TimesformerForVideoClassification` equal to our model
    (`official_key_to_hf` on every key). Schemes HF lacks (local_global, axial) raise `WeightError`."""
    hf_attention = {ours: hf for hf, ours in _HF_ATTENTION.items()}.get(cfg.attention)
    if hf_attention is None:
        raise WeightError(f"Hugging Face TimeSformer has no {cfg.attention!r} attention (only {sorted(_HF_ATTENTION)})")
    config = {
        "model_type": "timesformer", "architectures": ["TimesformerForVideoClassification"],
        "image_size": cfg.image_size, "patch_size": cfg.patch_size, "num_channels": cfg.in_chans,
        "num_frames": cfg.num_frames, "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads, "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio),
        "hidden_act": "gelu", "hidden_dropout_prob": cfg.drop_rate, "attention_probs_dropout_prob": cfg.attn_drop_rate,
        "layer_norm_eps": cfg.layer_norm_eps, "qkv_bias": cfg.qkv_bias, "attention_type": hf_attention,
        **hf_id2label(labels, cfg.num_classes),
    }
    return config, {official_key_to_hf(k): v for k, v in state.items()}


def load_hf(src: Source, cfg: TimeSformerConfig | None = None) -> tuple[StateDict, LoadReport]:
    """A Hugging Face `TimesformerForVideoClassification`: a state dict, a weights file
    (`.safetensors` or torch) or a `save_pretrained` folder.

    The target config is `cfg` if given, else `hf_timesformer_config(config.json)` of the folder.
    HF may keep `time_embeddings` for space-only models: dropped then (reported).
    """
    name = source_name(src, "Hugging Face state dict")
    raw, hf_cfg = (dict(src), None) if isinstance(src, Mapping) else read_hf_folder(src)
    if cfg is None:
        if hf_cfg is None:
            raise WeightError(f"{name}: no config.json to build the model from (give a preset)")
        cfg = hf_timesformer_config(hf_cfg)
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
