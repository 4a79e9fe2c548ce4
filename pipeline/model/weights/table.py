"""The one table of weight loaders, by (model family, source layout), and its entry point.

    state, report = load_weights(model, "timm", "vit_base_patch16_224.pt")
    model.load_state_dict(state)          # strict: every key matches
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from pipeline.model.timesformer import TimeSformerConfig
from pipeline.model.vivit import ViViTConfig
from pipeline.model.weights import timesformer, vivit
from pipeline.model.weights.common import LoadReport, Source, StateDict, WeightError, hf_labels, write_hf_folder

Loader = Callable[[Source, Any], tuple[StateDict, LoadReport]]

# Sources: `official` (the authors' `.pyth`), `hf` (Hugging Face state dict, weights file or
# save_pretrained folder), `timm` (an ImageNet ViT), `ours` (a `pipeline.model.save` checkpoint).
LOADERS: dict[tuple[str, str], Loader] = {
    ("timesformer", "official"): timesformer.load_official,
    ("timesformer", "hf"): timesformer.load_hf,
    ("timesformer", "timm"): timesformer.load_timm_vit,
    ("timesformer", "ours"): timesformer.load_ours,
    ("vivit", "hf"): vivit.load_hf_vivit,
    ("vivit", "ours"): vivit.load_ours,
}

# Hugging Face config.json -> our config (by `model_type`), and our model -> (config.json, HF state dict).
HF_CONFIGS: dict[str, Callable[..., Any]] = {"timesformer": timesformer.hf_timesformer_config,
                                             "vivit": vivit.hf_vivit_config}
HF_EXPORTERS: dict[str, Callable[..., tuple[dict[str, Any], StateDict]]] = {
    "timesformer": timesformer.to_hf_timesformer, "vivit": vivit.to_hf_vivit}

_CONFIG_FAMILY: dict[type, str] = {TimeSformerConfig: "timesformer", ViViTConfig: "vivit"}


def sources(family: str) -> list[str]:
    """The source layouts `family` loads from, sorted."""
    return sorted(s for fam, s in LOADERS if fam == family)


def family_and_config(model_or_config: nn.Module | Any) -> tuple[str, Any]:
    """(family, config) of a pipeline model or of a model config."""
    if isinstance(model_or_config, nn.Module):
        if not hasattr(model_or_config, "family") or not hasattr(model_or_config, "config"):
            raise WeightError(f"{type(model_or_config).__name__} is not a pipeline model (no .family / .config)")
        return model_or_config.family, model_or_config.config
    family = _CONFIG_FAMILY.get(type(model_or_config))
    if family is None:
        raise WeightError(f"{type(model_or_config).__name__} is not a model config "
                          f"(known: {sorted(c.__name__ for c in _CONFIG_FAMILY)})")
    return family, model_or_config


def load_weights(model_or_config: nn.Module | Any, source: str, src: Source) -> tuple[StateDict, LoadReport]:
    """(state dict fitted to the model, load report) from `src` in the `source` layout.

    The state dict loads strictly into the model (or a model built from the config). A family
    without weight loaders, or a source the family cannot take, is a `WeightError` naming the
    allowed ones; so is any checkpoint that does not fit.
    """
    family, cfg = family_and_config(model_or_config)
    allowed = sources(family)
    if not allowed:
        known = sorted({fam for fam, _ in LOADERS})
        raise WeightError(f"no weight loaders for model family {family!r} (known: {known})")
    if (family, source) not in LOADERS:
        raise WeightError(f"{family} weights load from sources {allowed}, not {source!r}")
    return LOADERS[(family, source)](src, cfg)


def hf_folder_config(folder: str, **overrides: Any) -> tuple[str, Any, list[str] | None]:
    """(family, our model config, class names) of a Hugging Face `save_pretrained` folder, from
    its `config.json` (`model_type` picks the family); `overrides` replace config fields."""
    from pipeline import storage

    uri = storage.join(str(folder), "config.json")
    if not storage.exists(uri):
        raise WeightError(f"{folder}: no config.json (a save_pretrained folder has one; or give a preset)")
    hf_config = storage.read_json(uri)
    family = hf_config.get("model_type")
    if family not in HF_CONFIGS:
        raise WeightError(f"{uri}: model_type {family!r} is not one of {sorted(HF_CONFIGS)}")
    return family, HF_CONFIGS[family](hf_config, **overrides), hf_labels(hf_config)


def export_hf(model: nn.Module, folder: str, labels: list[str] | None = None) -> dict[str, Any]:
    """Write `model` as a Hugging Face `save_pretrained` folder (`config.json` with `id2label`,
    `model.safetensors`) for `TimesformerForVideoClassification` / `VivitForVideoClassification`;
    returns the config. A model HF cannot express raises `WeightError`."""
    family, cfg = family_and_config(model)
    if family not in HF_EXPORTERS:
        raise WeightError(f"no Hugging Face export for model family {family!r}")
    config, state = HF_EXPORTERS[family](cfg, model.state_dict(), labels)
    write_hf_folder(folder, config, state)
    return config
