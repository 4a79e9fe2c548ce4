"""Import TimeSformer weights from other layouts, strictly and loudly.

    state_dict, report = load_official("TimeSformer_divST_8x32_224_K400.pyth", cfg)
    model = TimeSformer(cfg); model.load_state_dict(state_dict)   # strict: every key matches
    print(report)

Each loader returns a state dict in this package's layout (equal to the official one without the
`model.` prefix), already resized to `cfg`, plus a `LoadReport` that names every key that was
renamed from another layout, resized, initialised from another key, freshly initialised, or dropped.
A key that no rule explains (missing or unexpected) raises `WeightError`: nothing is skipped in
silence. Sources: a path / URI (read with `torch.load(weights_only=True)`) or an in-memory dict.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange

from pipeline.model.timesformer import TimeSformer, TimeSformerConfig

StateDict = dict[str, torch.Tensor]


class WeightError(ValueError):
    """A checkpoint that does not fit the model (missing / unexpected keys, bad shapes)."""


@dataclass
class LoadReport:
    """What a loader did to every key that was not a plain copy."""

    source: str
    resized: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    initialized_from: list[tuple[str, str]] = field(default_factory=list)  # (key, from key)
    fresh: list[str] = field(default_factory=list)  # keys left at the model's own init
    dropped: list[str] = field(default_factory=list)  # source keys deliberately not used
    copied: int = 0

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.copied} tensors copied"]
        lines += [f"  resized {k}: {list(a)} -> {list(b)}" for k, a, b in self.resized]
        lines += [f"  initialised {k} from {src}" for k, src in self.initialized_from]
        lines += [f"  fresh init {k}" for k in self.fresh]
        lines += [f"  dropped {k}" for k in self.dropped]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (for summary.json)."""
        return {
            "source": self.source,
            "copied": self.copied,
            "resized": [[k, list(a), list(b)] for k, a, b in self.resized],
            "initialized_from": [list(p) for p in self.initialized_from],
            "fresh": list(self.fresh),
            "dropped": list(self.dropped),
        }


# ---------------------------------------------------------------------------- reading sources


def read_state(src: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint object from a path / URI (torch.load, weights_only) or pass a mapping through."""
    if isinstance(src, Mapping):
        return dict(src)
    from pipeline import storage

    obj = torch.load(io.BytesIO(storage.read_bytes(str(src))), map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise WeightError(f"{src}: expected a dict checkpoint, got {type(obj).__name__}")
    return dict(obj)


def _tensors(d: Mapping[str, Any], where: str) -> StateDict:
    out = {}
    for k, v in d.items():
        if not isinstance(v, torch.Tensor):
            raise WeightError(f"{where}: value of {k!r} is {type(v).__name__}, not a tensor")
        out[k] = v
    return out


# ---------------------------------------------------------------------------- resampling


def resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """[1, 1 + g*g, D] -> [1, 1 + grid*grid, D]: bicubic on the 2-D patch grid, cls row kept."""
    n = pos.shape[1] - 1
    g = int(round(n**0.5))
    if g * g != n:
        raise WeightError(f"pos_embed has {n} patch rows, not a square grid")
    if g == grid:
        return pos
    patches = rearrange(pos[:, 1:], "one (gh gw) d -> one d gh gw", gh=g)
    patches = F.interpolate(patches.float(), size=(grid, grid), mode="bicubic", align_corners=False)
    patches = rearrange(patches, "one d gh gw -> one (gh gw) d").to(pos.dtype)  # [1, grid*grid, D]
    return torch.cat([pos[:, :1], patches], dim=1)


def resize_time_embed(time: torch.Tensor, frames: int) -> torch.Tensor:
    """[1, T, D] -> [1, frames, D]: linear interpolation over time."""
    if time.shape[1] == frames:
        return time
    t = F.interpolate(rearrange(time.float(), "one t d -> one d t"), size=frames, mode="linear", align_corners=False)
    return rearrange(t, "one d t -> one t d").to(time.dtype)


# ---------------------------------------------------------------------------- the strict fit


def _expected(cfg: TimeSformerConfig) -> StateDict:
    """The model's own freshly initialised state dict (targets, shapes and fresh values)."""
    return TimeSformer(cfg).state_dict()


def fit_state_dict(
    source: StateDict,
    cfg: TimeSformerConfig,
    report: LoadReport,
    *,
    derive: Mapping[str, str] | None = None,
    fresh_ok: set[str] | frozenset[str] = frozenset(),
    drop_ok: set[str] | frozenset[str] = frozenset(),
) -> StateDict:
    """Fit `source` (already in our key names) to the model of `cfg`, or raise `WeightError`.

    - `pos_embed` / `time_embed` of another size are resampled (reported);
    - a target key missing from `source` is taken from `derive[key]` when given (reported), or left
      at the model's init when listed in `fresh_ok` (reported); otherwise it is an error;
    - a source key the model lacks is dropped only when listed in `drop_ok` (reported);
    - `head.*` of another class count is dropped and freshly initialised (reported);
    - any other shape mismatch is an error.
    """
    derive = dict(derive or {})
    target = _expected(cfg)
    out: StateDict = {}
    missing, bad_shape = [], []
    for key, ref in target.items():
        if key in source:
            value = source[key]
        elif key in derive and derive[key] in source:
            value = source[derive[key]]
            report.initialized_from.append((key, derive[key]))
        elif key in fresh_ok:
            out[key] = ref
            report.fresh.append(key)
            continue
        else:
            missing.append(key)
            continue
        if key == "pos_embed" and value.shape != ref.shape and value.shape[-1] == ref.shape[-1]:
            value = resize_pos_embed(value, cfg.grid)
            report.resized.append((key, tuple(source[key].shape), tuple(value.shape)))
        elif key == "time_embed" and value.shape != ref.shape and value.shape[-1] == ref.shape[-1]:
            old = tuple(value.shape)
            value = resize_time_embed(value, cfg.num_frames)
            report.resized.append((key, old, tuple(value.shape)))
        elif key.startswith("head.") and value.shape != ref.shape:
            out[key] = ref
            report.dropped.append(f"{key} {list(value.shape)} (class count differs)")
            report.fresh.append(key)
            continue
        if value.shape != ref.shape:
            bad_shape.append(f"{key}: checkpoint {list(value.shape)} vs model {list(ref.shape)}")
            continue
        out[key] = value.to(ref.dtype)
        if key in source:
            report.copied += 1
    used = set(source) & set(target) | {derive[k] for k in derive if k in target}
    unexpected = sorted(k for k in set(source) - used if k not in drop_ok)
    report.dropped += sorted(k for k in set(source) - used if k in drop_ok)
    problems = _fit_problems(missing, unexpected, bad_shape)
    if problems:
        raise WeightError(f"{report.source} does not fit TimeSformer({cfg.attention}): {problems}")
    return out


def _fit_problems(missing: list[str], unexpected: list[str], bad_shape: list[str],
                 shape_hint: str = "") -> str:
    """One line naming the missing / unexpected / wrongly shaped keys ('' when all fit)."""

    def first(keys: list[str], sep: str = ", ") -> str:
        return sep.join(keys[:12]) + (" ..." if len(keys) > 12 else "")

    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {first(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {first(unexpected)}")
    if bad_shape:
        problems.append(f"shape mismatch{shape_hint}: {first(bad_shape, '; ')}")
    return " | ".join(problems)


# ---------------------------------------------------------------------------- loaders


def load_official(src: str | Path | Mapping[str, Any], cfg: TimeSformerConfig) -> tuple[StateDict, LoadReport]:
    """An official TimeSformer checkpoint (`*.pyth`: {"model_state": {"model.<key>": ...}, ...}).

    Accepts the whole checkpoint, its `model_state`, or a plain state dict; the `model.` prefix is
    stripped. `time_embed` in a space-only checkpoint is dropped (reported).
    """
    name = str(src) if not isinstance(src, Mapping) else "official state dict"
    obj = read_state(src)
    state = obj.get("model_state", obj)
    state = _tensors(state, name)
    state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
    report = LoadReport(source=name)
    drop = {"time_embed"} if cfg.attention == "space_only" else set()
    return fit_state_dict(state, cfg, report, drop_ok=drop), report


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


def load_hf(src: str | Path | Mapping[str, Any], cfg: TimeSformerConfig) -> tuple[StateDict, LoadReport]:
    """A Hugging Face `TimesformerForVideoClassification`: a state dict, a weights file
    (`.safetensors` or torch) or a `save_pretrained` folder.

    HF may keep `time_embeddings` for space-only models: dropped then (reported).
    """
    name = str(src) if not isinstance(src, Mapping) else "Hugging Face state dict"
    raw = dict(src) if isinstance(src, Mapping) else _read_hf_folder(src)[0]
    state = _tensors(raw, name)
    renamed = {hf_key_to_official(k): v for k, v in state.items()}
    report = LoadReport(source=name)
    drop = {"time_embed"} if cfg.attention == "space_only" else set()
    return fit_state_dict(renamed, cfg, report, drop_ok=drop), report


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


def load_timm_vit(src: str | Path | Mapping[str, Any], cfg: TimeSformerConfig) -> tuple[StateDict, LoadReport]:
    """An ImageNet ViT in timm's `vit_base_patch16_224` layout -> TimeSformer init (official recipe).

    Spatial weights are copied; temporal (and the extra schemes') attention and norms start from
    the block's spatial `attn` / `norm1`; `temporal_fc` and `time_embed` start at zero (the model's
    own init); `pos_embed` is resampled to the grid; a head of another class count (or none, for a
    backbone) leaves the model's fresh head (reported).
    Keys of a timm checkpoint with `fc_norm` / `pre_logits` are errors (other ViT variants).
    """
    name = str(src) if not isinstance(src, Mapping) else "timm ViT state dict"
    obj = read_state(src)
    state = _tensors(obj.get("model", obj.get("state_dict", obj)), name)
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


# =============================================================================================
# ViViT: Hugging Face `VivitForVideoClassification` -> our ViViT Model 1 (section owned by the
# ViViT engineer; everything above is the TimeSformer side).
#
# HF ViViT is Model 1 (joint attention): a Conv3d tubelet embedding whose tokens come out in
# (t h w) order behind a cls token, one joint position embedding [1, 1+N, D], separate q/k/v
# projections (ours: one fused `qkv`, q, k, v stacked along dim 0). Two key layouts exist:
#   in memory (transformers 5.x):  vivit.layers.{i}.attention.{q,k,v,o}_proj, .mlp.fc{1,2}
#   on disk (save_pretrained in 5.x, and every Hub checkpoint from 4.x):
#     vivit.encoder.layer.{i}.attention.attention.{query,key,value}, .attention.output.dense,
#     .intermediate.dense, .output.dense
# Both are accepted. Geometry and GELU variant come from the folder's config.json
# (`hf_vivit_config`); HF's default `hidden_act="gelu_fast"` is our `gelu="tanh"`.
# =============================================================================================

# (regex on the HF key without its `vivit.` prefix, our name); `\1` is the layer index.
_HF_VIVIT_RULES: list[tuple[str, str]] = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
    (r"^(?:layers|encoder\.layer)\.(\d+)\.layernorm_before\.(weight|bias)$", r"blocks.\1.norm1.\2"),
    (r"^(?:layers|encoder\.layer)\.(\d+)\.layernorm_after\.(weight|bias)$", r"blocks.\1.norm2.\2"),
    (r"^layers\.(\d+)\.attention\.o_proj\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
    (r"^layers\.(\d+)\.mlp\.fc1\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2"),
    (r"^layers\.(\d+)\.mlp\.fc2\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2"),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2"),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2"),
    (r"^layernorm\.(weight|bias)$", r"norm.\1"),
]
# q / k / v projections in either layout -> (layer, part, leaf); fused into blocks.{i}.attn.qkv.
_HF_VIVIT_QKV = re.compile(
    r"^(?:layers\.(\d+)\.attention\.([qkv])_proj|encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value))"
    r"\.(weight|bias)$"
)
# Per layer: norm1, norm2, attn.proj, mlp.fc1, mlp.fc2 (weight + bias each) + qkv weight (+ bias).
_VIVIT_BLOCK_LEAVES = [f"{m}.{leaf}" for m in ("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2")
                       for leaf in ("weight", "bias")] + ["attn.qkv.weight"]


def _read_hf_folder(src: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Tensors and config.json (or None) of a save_pretrained folder, or of one weights file.

    A folder may hold `model.safetensors`, sharded `model-*.safetensors` with an index, or
    `pytorch_model.bin` (read with weights_only=True).
    """
    from pipeline import storage

    uri = str(src)
    fs, path = storage.filesystem(uri)
    if not fs.isdir(path):
        if uri.endswith(".safetensors"):
            from safetensors.torch import load as load_safetensors

            return load_safetensors(storage.read_bytes(uri)), None
        return read_state(uri), None
    config_uri = storage.join(uri, "config.json")
    config = storage.read_json(config_uri) if storage.exists(config_uri) else None
    files = [storage.join(uri, "model.safetensors")]
    index = storage.join(uri, "model.safetensors.index.json")
    if storage.exists(index):
        files = [storage.join(uri, f) for f in sorted(set(storage.read_json(index)["weight_map"].values()))]
    if all(storage.exists(f) for f in files):
        from safetensors.torch import load as load_safetensors

        state: dict[str, Any] = {}
        for f in files:
            state.update(load_safetensors(storage.read_bytes(f)))
        return state, config
    if storage.exists(storage.join(uri, "pytorch_model.bin")):
        return read_state(storage.join(uri, "pytorch_model.bin")), config
    raise WeightError(f"{uri}: no model.safetensors(.index.json) or pytorch_model.bin in this folder")


def hf_vivit_config(hf_config: Mapping[str, Any], **overrides: Any):
    """Our `ViViTConfig` (Model 1) with the geometry of an HF `VivitConfig` dict (config.json).

    `overrides` replace fields afterwards (e.g. `num_classes`, `attn_impl`). Settings our model
    cannot express (non-square tubelets or images, an unknown activation) raise `WeightError`.
    """
    from pipeline.model.vivit import ViViTConfig

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
        for pattern, repl in _HF_VIVIT_RULES:
            new, n = re.subn(pattern, repl, short)
            if n:
                if new in out:
                    raise WeightError(f"{name}: {key!r} maps onto {new!r} twice (mixed 4.x / 5.x layouts?)")
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise WeightError(f"{name}: {len(unknown)} keys that are not HF ViViT: {', '.join(sorted(unknown)[:12])}")
    for (layer, leaf), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise WeightError(f"{name}: layer {layer} {leaf}: has only {sorted(parts)} of q / k / v")
        if not parts["q"].shape == parts["k"].shape == parts["v"].shape:
            raise WeightError(f"{name}: layer {layer} {leaf}: q / k / v shapes differ")
        out[f"blocks.{layer}.attn.qkv.{leaf}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)  # [3D(, D)]
    # structure: layers 0..L-1, each complete; the embedding and final norm present
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
    return out


def load_hf_vivit(
    src: str | Path | Mapping[str, Any], cfg: Any | None = None
) -> tuple[StateDict, LoadReport]:
    """A Hugging Face `VivitForVideoClassification` (save_pretrained folder, weights file or state
    dict) -> a state dict for our ViViT Model 1, plus the report.

    The target config is `cfg` if given, else `hf_vivit_config(config.json)` of the folder; then
    every key and shape must match `ViViT(cfg)` exactly, except a head of another class count,
    which is dropped and left at its fresh init (reported); a body without `classifier.*` gets a
    fresh head (reported). Without either config the renamed dict is returned after the
    structural checks only (layers 0..L-1 complete, q/k/v present with equal shapes).
    Position embeddings are never resampled here: build the model at the checkpoint's
    `num_frames` / `image_size`; its forward resamples them for other input sizes.
    """
    from pipeline.model.vivit import ViViT

    name = str(src) if not isinstance(src, Mapping) else "Hugging Face ViViT state dict"
    if isinstance(src, Mapping):
        raw, hf_cfg = dict(src), None
    else:
        raw, hf_cfg = _read_hf_folder(src)
    state = _tensors(raw, name)
    report = LoadReport(source=name)
    renamed = _hf_vivit_rename(state, name, report)
    if cfg is None and hf_cfg is not None:
        cfg = hf_vivit_config(hf_cfg)
    if cfg is None:
        report.copied = len(renamed)
        return renamed, report
    if cfg.model != 1:
        raise WeightError(f"HF ViViT is Model 1 (joint attention); the target config is Model {cfg.model}")
    target = ViViT(cfg).state_dict()
    out: StateDict = {}
    missing = sorted(k for k in target if k not in renamed)
    unexpected = sorted(k for k in renamed if k not in target)
    bad = []
    if missing == ["head.bias", "head.weight"]:  # a VivitModel body without classifier
        missing = []
        report.fresh += ["head.weight", "head.bias"]
        out.update({k: target[k] for k in ("head.weight", "head.bias")})
    for key, ref in target.items():
        if key not in renamed:
            continue
        value = renamed[key]
        if key.startswith("head.") and value.shape != ref.shape:
            report.dropped.append(f"{key} {list(value.shape)} (class count differs)")
            report.fresh.append(key)
            out[key] = ref
            continue
        if value.shape != ref.shape:
            bad.append(f"{key}: checkpoint {list(value.shape)} vs model {list(ref.shape)}")
            continue
        out[key] = value.to(ref.dtype)
        report.copied += 1
    problems = _fit_problems(missing, unexpected, bad, shape_hint=(
        " (build the model at the checkpoint's num_frames / image_size / tubelet)"))
    if problems:
        raise WeightError(f"{name} does not fit ViViT(model 1, depth {cfg.depth}): {problems}")
    return out, report
