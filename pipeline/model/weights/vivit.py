"""ViViT weights from a Hugging Face `VivitForVideoClassification` (Model 1) or our own checkpoint.
Both HF key layouts and the config mapping: docs/WEIGHTS.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from pipeline.model.vivit import ViViT, ViViTConfig
from pipeline.model.weights.common import (
    LoadReport, Source, StateDict, WeightError, check_tensors, fit_expected, hf_id2label, read_hf_folder,
    rename_prefix, source_name,
)

# (HF name without its `vivit.` prefix, ours) in the save_pretrained layout (every 4.x Hub
# checkpoint; `export` writes it); `{i}` is the layer index. Whole names end without a dot.
_HF_VIVIT_NAMES: list[tuple[str, str]] = [
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("encoder.layer.{i}.layernorm_before.", "blocks.{i}.norm1."),
    ("encoder.layer.{i}.layernorm_after.", "blocks.{i}.norm2."),
    ("encoder.layer.{i}.attention.output.dense.", "blocks.{i}.attn.proj."),
    ("encoder.layer.{i}.intermediate.dense.", "blocks.{i}.mlp.fc1."),
    ("encoder.layer.{i}.output.dense.", "blocks.{i}.mlp.fc2."),
    ("layernorm.", "norm."),
]
# The same tensors under the in-memory names of transformers 5.x (read only).
_HF_VIVIT_NAMES_5X: list[tuple[str, str]] = [
    ("layers.{i}.layernorm_before.", "blocks.{i}.norm1."),
    ("layers.{i}.layernorm_after.", "blocks.{i}.norm2."),
    ("layers.{i}.attention.o_proj.", "blocks.{i}.attn.proj."),
    ("layers.{i}.mlp.fc1.", "blocks.{i}.mlp.fc1."),
    ("layers.{i}.mlp.fc2.", "blocks.{i}.mlp.fc2."),
]
_HF_VIVIT_QKV_NAME = "encoder.layer.{i}.attention.attention.{part}.{leaf}"  # save_pretrained layout of q / k / v
# q / k / v projections in either layout -> (layer, part, leaf); fused into blocks.{i}.attn.qkv.
_HF_VIVIT_QKV = re.compile(
    r"^(?:layers\.(\d+)\.attention\.([qkv])_proj|encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value))"
    r"\.(weight|bias)$"
)
# Per layer: norm1, norm2, attn.proj, mlp.fc1, mlp.fc2 (weight + bias each) + qkv weight (+ bias).
_VIVIT_BLOCK_LEAVES = [f"{m}.{leaf}" for m in ("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2")
                       for leaf in ("weight", "bias")] + ["attn.qkv.weight"]
# No resampling here: the model resamples its position embeddings in forward for other input sizes.
_SHAPE_HINT = " (build the model at the checkpoint's num_frames / image_size / tubelet)"


def hf_vivit_config(hf_config: Mapping[str, Any], **overrides: Any) -> ViViTConfig:
    """Our `ViViTConfig` (Model 1) with the geometry of an HF `VivitConfig` dict (config.json).

    `overrides` replace fields afterwards (e.g. `num_classes`, `attn_impl`). Settings our model
    cannot express (non-square tubelets or images, an unknown activation) raise `WeightError`.
    """
    c = dict(hf_config)
    if c.get("model_type", "vivit") != "vivit":
        raise WeightError(f"config.json is for model_type {c.get('model_type')!r}, not 'vivit'")
    t, ph, pw = c.get("tubelet_size", (2, 16, 16))
    size = c.get("image_size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    if ph != pw or size[0] != size[1]:
        raise WeightError(f"non-square tubelet {(t, ph, pw)} or image {size} is not supported")
    act = c.get("hidden_act", "gelu_fast")
    gelu = {"gelu": "exact", "gelu_fast": "tanh", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}.get(act)
    if gelu is None:
        raise WeightError(f"hidden_act {act!r} has no equivalent here (use gelu / gelu_fast / gelu_new)")
    hidden = c.get("hidden_size", 768)
    labels = c.get("id2label") or {}
    fields = dict(
        model=1, num_classes=len(labels) or c.get("num_labels", 2), num_frames=c.get("num_frames", 32),
        image_size=size[0], in_chans=c.get("num_channels", 3), tokenizer="tubelet", tubelet_size=t,
        patch_size=ph, embed_dim=hidden, depth=c.get("num_hidden_layers", 12),
        num_heads=c.get("num_attention_heads", 12), mlp_ratio=c.get("intermediate_size", 3072) / hidden,
        qkv_bias=c.get("qkv_bias", True), gelu=gelu, layer_norm_eps=c.get("layer_norm_eps", 1e-6),
        drop_path_rate=0.0,
    )
    fields.update(overrides)
    return ViViTConfig(**fields)


def _hf_vivit_rename(state: Mapping[str, torch.Tensor], name: str, report: LoadReport) -> StateDict:
    """HF names (either layout) -> ours, q/k/v fused into qkv; counts and shapes asserted."""
    out: StateDict = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state.items():
        short = key[len("vivit."):] if key.startswith("vivit.") else key
        if short.startswith("pooler."):  # VivitModel's tanh pooler: no part of the classifier
            report.dropped.append(key)
            continue
        if key.startswith("classifier."):
            out["head." + key[len("classifier."):]] = value
            continue
        m = _HF_VIVIT_QKV.match(short)
        if m:
            layer = int(m.group(1) or m.group(3))
            part = (m.group(2) or m.group(4))[0]  # q / k / v
            qkv.setdefault((layer, m.group(5)), {})[part] = value
            continue
        new = rename_prefix(short, _HF_VIVIT_NAMES + _HF_VIVIT_NAMES_5X)
        if new is None:
            unknown.append(key)
            continue
        if new in out:
            raise WeightError(f"{name}: {key!r} maps onto {new!r} twice (mixed 4.x / 5.x layouts?)")
        out[new] = value
    if unknown:
        raise WeightError(f"{name}: {len(unknown)} keys that are not HF ViViT: {', '.join(sorted(unknown)[:12])}")
    for (layer, leaf), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise WeightError(f"{name}: layer {layer} {leaf}: has only {sorted(parts)} of q / k / v")
        if not parts["q"].shape == parts["k"].shape == parts["v"].shape:
            raise WeightError(f"{name}: layer {layer} {leaf}: q / k / v shapes differ")
        out[f"blocks.{layer}.attn.qkv.{leaf}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)  # [3D(, D)]
    _check_structure(out, name)
    return out


def _check_structure(out: StateDict, name: str) -> None:
    """Layers 0..L-1, each complete; the embedding and final norm present; a Conv3d projection."""
    layers = sorted({int(k.split(".")[1]) for k in out if k.startswith("blocks.")})
    if layers != list(range(len(layers))) or not layers:
        raise WeightError(f"{name}: layer indices {layers} are not 0..L-1")
    for i in layers:
        have = {k[len(f"blocks.{i}."):] for k in out if k.startswith(f"blocks.{i}.")}
        lacking = sorted(set(_VIVIT_BLOCK_LEAVES) - have)
        if lacking:
            raise WeightError(f"{name}: layer {i} lacks {', '.join(lacking)}")
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "norm.bias"):
        if key not in out:
            raise WeightError(f"{name}: no HF counterpart of {key!r}")
    d = out["cls_token"].shape[-1]
    if out["patch_embed.proj.weight"].ndim != 5 or out["patch_embed.proj.weight"].shape[0] != d:
        raise WeightError(f"{name}: patch projection {list(out['patch_embed.proj.weight'].shape)} is not a Conv3d to D={d}")


def fit_vivit(state: StateDict, cfg: ViViTConfig, report: LoadReport) -> StateDict:
    """Fit `state` (our key names) to `ViViT(cfg)` exactly, or raise `WeightError`.

    A head of another class count is dropped and left at its fresh init; a body without any head
    (both `head.*` absent and nothing else missing) gets a fresh head (both reported). Position
    embeddings are never resampled.
    """
    expected = ViViT(cfg).state_dict()
    absent = set(expected) - set(state)
    fresh = absent if absent == {"head.weight", "head.bias"} else set()
    return fit_expected(state, expected, report, f"ViViT(model {cfg.model}, depth {cfg.depth})",
                        fresh_ok=fresh, shape_hint=_SHAPE_HINT)


def load_hf_vivit(src: Source, cfg: ViViTConfig | None = None) -> tuple[StateDict, LoadReport]:
    """A Hugging Face `VivitForVideoClassification` (save_pretrained folder, weights file or state
    dict) -> a state dict for our ViViT Model 1, plus the report.

    The target config is `cfg` if given, else `hf_vivit_config(config.json)` of the folder; then
    every key and shape must match `ViViT(cfg)` exactly (`fit_vivit`). Without either config the
    renamed dict is returned after the structural checks only (layers 0..L-1 complete, q/k/v
    present with equal shapes). Position embeddings are never resampled here: build the model at
    the checkpoint's `num_frames` / `image_size`; its forward resamples them for other input sizes.
    """
    name = source_name(src, "Hugging Face ViViT state dict")
    if isinstance(src, Mapping):
        raw, hf_cfg = dict(src), None
    else:
        raw, hf_cfg = read_hf_folder(src)
    report = LoadReport(source=name)
    renamed = _hf_vivit_rename(check_tensors(raw, name), name, report)
    if cfg is None and hf_cfg is not None:
        cfg = hf_vivit_config(hf_cfg)
    if cfg is None:
        report.copied = len(renamed)
        return renamed, report
    if cfg.model != 1:
        raise WeightError(f"HF ViViT is Model 1 (joint attention); the target config is Model {cfg.model}")
    return fit_vivit(renamed, cfg, report), report


def to_hf_vivit(cfg: ViViTConfig, state: Mapping[str, torch.Tensor],
                labels: list[str] | None = None) -> tuple[dict[str, Any], StateDict]:
    """(config.json, state dict in the save_pretrained layout) of the HF `VivitForVideoClassification`
    equal to our Model 1 with tubelet tokens: `_HF_VIVIT_NAMES` read backwards, `qkv` split into
    query / key / value. Other models or tokenizers raise `WeightError`."""
    if cfg.model != 1 or cfg.tokenizer != "tubelet":
        raise WeightError(f"Hugging Face ViViT is Model 1 with tubelet tokens; this is Model {cfg.model}, {cfg.tokenizer}")
    config = {
        "model_type": "vivit", "architectures": ["VivitForVideoClassification"], "image_size": cfg.image_size,
        "num_frames": cfg.num_frames, "tubelet_size": [cfg.tubelet_size, cfg.patch_size, cfg.patch_size],
        "num_channels": cfg.in_chans, "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads, "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio),
        "hidden_act": {"exact": "gelu", "tanh": "gelu_fast"}[cfg.gelu], "hidden_dropout_prob": cfg.drop_rate,
        "attention_probs_dropout_prob": cfg.attn_drop_rate, "layer_norm_eps": cfg.layer_norm_eps,
        "qkv_bias": cfg.qkv_bias, **hf_id2label(labels, cfg.num_classes),
    }
    back = [(ours, hf) for hf, ours in _HF_VIVIT_NAMES] + [("head.", "classifier.")]
    out: StateDict = {}
    for key, value in state.items():
        m = re.match(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
        if m:
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):  # [3D(, D)] -> 3 x [D(, D)]
                out["vivit." + _HF_VIVIT_QKV_NAME.format(i=m.group(1), part=part, leaf=m.group(2))] = chunk
            continue
        new = rename_prefix(key, back)
        if new is None:
            raise WeightError(f"no Hugging Face ViViT name for {key!r}")
        out[new if new.startswith("classifier.") else "vivit." + new] = value
    return config, out


def load_ours(src: str | Path, cfg: ViViTConfig) -> tuple[StateDict, LoadReport]:
    """The `state_dict` of a `pipeline.model.save` checkpoint fitted to `ViViT(cfg)` (`fit_vivit`)."""
    from pipeline import model as models

    name = str(src)
    report = LoadReport(source=name)
    state = check_tensors(models.read_checkpoint(name)["state_dict"], name)
    return fit_vivit(state, cfg, report), report
