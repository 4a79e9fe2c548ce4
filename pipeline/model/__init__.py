"""Video transformer models (no Ray): build from presets, save and load our checkpoint format.

    model = create("timesformer_base", num_classes=1059)        # divided space-time, 8 x 224
    save(model, "s3://bucket/ckpt/model.pt", epoch=3)
    model = load("s3://bucket/ckpt/model.pt")                   # eval mode, weights_only=True

Checkpoint format `pipeline.model/1`: a dict `{"format", "family", "config", "state_dict", "meta"}`
with plain Python values and tensors only, so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import torch
from torch import nn

from pipeline.config import ConfigError, from_dict
from pipeline.model import timesformer, vivit
from pipeline.model.timesformer import TimeSformer, TimeSformerConfig

FORMAT = "pipeline.model/1"


def _families() -> dict[str, tuple[type, type, dict[str, dict]]]:
    """family -> (config class, model class, presets)."""
    return {
        "timesformer": (TimeSformerConfig, TimeSformer, timesformer.PRESETS),
        "vivit": (vivit.ViViTConfig, vivit.ViViT, vivit.PRESETS),
    }


def presets() -> dict[str, str]:
    """Preset name -> family."""
    return {name: fam for fam, (_, _, table) in _families().items() for name in table}


def model_config(family: str, config: dict[str, Any]) -> Any:
    """The config dataclass of `family` from a mapping (unknown family: ValueError; unknown key or
    bad value: ConfigError), without building the model."""
    families = _families()
    if family not in families:
        raise ValueError(f"unknown model family {family!r} (known: {sorted(families)})")
    return from_dict(families[family][0], config)


def preset_config(preset: str, **overrides: Any) -> Any:
    """The config `create(preset, **overrides)` builds; an unknown preset or field raises
    (`ValueError` / `ConfigError`). Cheap: checks a job's model settings before any work."""
    for family, (_, _, table) in _families().items():
        if preset in table:
            return model_config(family, {**table[preset], **overrides})
    raise ValueError(f"unknown preset {preset!r} (known: {sorted(presets())})")


def check_clip_shape(config: Any, num_frames: int, size: int) -> None:
    """Raise ValueError (one line) when the model of `config` cannot take clips of `num_frames` x
    `size` x `size` (a side not a multiple of the patch, frames not a multiple of the tubelet)."""
    try:
        dataclasses.replace(config, num_frames=num_frames, image_size=size)
    except (TypeError, ValueError) as e:
        raise ValueError(f"clips of {num_frames} x {size} px do not fit the model: {e}") from None


def build(family: str, config: dict[str, Any]) -> nn.Module:
    """A freshly initialised model of `family` from a config mapping (unknown keys are errors)."""
    cfg = model_config(family, config)
    return _families()[family][1](cfg)


def create(preset: str, **overrides: Any) -> nn.Module:
    """Build the model of `preset` with config fields replaced by `overrides`.

    An unknown preset or config field raises (`ValueError` / `ConfigError`).
    """
    cfg = preset_config(preset, **overrides)
    family = presets()[preset]
    return _families()[family][1](cfg)


def save(model: nn.Module, path_or_uri: str, **meta: Any) -> None:
    """Write `model` in the `pipeline.model/1` format to a local path or URI, atomically.

    `meta` (epoch, labels, metrics, ...) must hold plain Python values (weights_only-safe). A name
    ending in `.safetensors` writes the same checkpoint as safetensors: the tensors, with format,
    family, config and meta as JSON in the file's metadata (no pickle at all).
    """
    from pipeline import storage

    for attr in ("family", "config"):
        if not hasattr(model, attr):
            raise TypeError(f"save() needs a pipeline model with .{attr}; got {type(model).__name__}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {
        "format": FORMAT,
        "family": model.family,
        "config": dataclasses.asdict(model.config),
        "state_dict": state,
        "meta": dict(meta),
    }
    if str(path_or_uri).endswith(".safetensors"):
        from safetensors.torch import save as save_safetensors

        header = {k: json.dumps(blob[k]) for k in ("format", "family", "config", "meta")}
        storage.write_bytes_atomic(str(path_or_uri), save_safetensors(
            {k: v.contiguous() for k, v in state.items()}, metadata=header))
        return
    buf = io.BytesIO()
    torch.save(blob, buf)
    storage.write_bytes_atomic(str(path_or_uri), buf.getvalue())


def read_checkpoint(path_or_uri: str) -> dict[str, Any]:
    """The raw checkpoint dict (validated format), read with `weights_only=True`."""
    from pipeline import storage

    data = storage.read_bytes(str(path_or_uri))
    if str(path_or_uri).endswith(".safetensors"):
        obj = _from_safetensors(data)
    else:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{path_or_uri}: not a {FORMAT} checkpoint (format={found!r}); "
            "convert official / Hugging Face / timm weights with `python -m jobs.convert`"
        )
    return obj


def _from_safetensors(data: bytes) -> dict[str, Any]:
    """Our checkpoint dict from safetensors bytes written by `save` (metadata values are JSON)."""
    from safetensors.torch import load as load_safetensors

    size = int.from_bytes(data[:8], "little")  # the file starts with its JSON header's length
    header = json.loads(data[8:8 + size]).get("__metadata__") or {}
    obj: dict[str, Any] = {k: json.loads(v) for k, v in header.items() if k in ("format", "family", "config", "meta")}
    obj["state_dict"] = load_safetensors(data)
    return obj


def load(path_or_uri: str) -> nn.Module:
    """The model saved at `path_or_uri`, weights loaded strictly, in eval mode."""
    ckpt = read_checkpoint(path_or_uri)
    try:
        model = build(ckpt["family"], ckpt["config"])
    except ConfigError as e:
        raise ValueError(f"{path_or_uri}: bad config in checkpoint: {e}") from e
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


__all__ = ["FORMAT", "TimeSformer", "TimeSformerConfig", "build", "check_clip_shape", "create", "load",
           "model_config", "preset_config", "presets", "read_checkpoint", "save"]
