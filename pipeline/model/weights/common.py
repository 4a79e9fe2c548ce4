"""What every family's weight import shares: the report, reading checkpoints, resampling the
position embeddings, and the strict fit of a renamed state dict against a model's own state dict.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange

StateDict = dict[str, torch.Tensor]
Source = str | Path | Mapping[str, Any]  # a path / URI, or a checkpoint already in memory


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


def read_state(src: Source) -> dict[str, Any]:
    """A checkpoint object from a path / URI (torch.load, weights_only) or pass a mapping through."""
    if isinstance(src, Mapping):
        return dict(src)
    from pipeline import storage

    obj = torch.load(io.BytesIO(storage.read_bytes(str(src))), map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise WeightError(f"{src}: expected a dict checkpoint, got {type(obj).__name__}")
    return dict(obj)


def source_name(src: Source, in_memory: str) -> str:
    """How a report names `src`: its path / URI, or `in_memory` for a mapping."""
    return in_memory if isinstance(src, Mapping) else str(src)


def check_tensors(d: Mapping[str, Any], where: str) -> StateDict:
    """`d` itself, once every value is checked to be a tensor."""
    out = {}
    for k, v in d.items():
        if not isinstance(v, torch.Tensor):
            raise WeightError(f"{where}: value of {k!r} is {type(v).__name__}, not a tensor")
        out[k] = v
    return out


def read_hf_folder(src: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
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


def rename_prefix(key: str, pairs: list[tuple[str, str]]) -> str | None:
    """Rename `key` by the first (from, to) prefix template that matches it; None when none does.
    `{i}` in a template is a block index; a template without a trailing dot is a whole name."""
    for src, dst in pairs:
        pattern = "^" + re.escape(src).replace(re.escape("{i}"), r"(?P<i>\d+)") + ("" if src.endswith(".") else "$")
        m = re.match(pattern, key)
        if m:
            return dst.format(i=m.groupdict().get("i")) + key[m.end():]
    return None


def hf_labels(hf_config: Mapping[str, Any]) -> list[str] | None:
    """Class names of an HF config.json (`id2label` ordered by id), or None without one."""
    id2label = hf_config.get("id2label") or {}
    if not id2label:
        return None
    ids = sorted(int(i) for i in id2label)
    if ids != list(range(len(ids))):
        raise WeightError(f"config.json id2label ids {ids[:8]} are not 0..N-1")
    return [str(id2label.get(str(i), id2label.get(i))) for i in ids]


def hf_id2label(labels: list[str] | None, num_classes: int) -> dict[str, Any]:
    """`id2label` / `label2id` of an HF config.json for `labels` (or LABEL_i names)."""
    names = list(labels) if labels and len(labels) == num_classes else [f"LABEL_{i}" for i in range(num_classes)]
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def write_hf_folder(folder: str, config: dict[str, Any], state: StateDict) -> None:
    """A `save_pretrained`-style folder: `config.json` and `model.safetensors` (written atomically)."""
    from safetensors.torch import save as save_safetensors

    from pipeline import storage

    blob = save_safetensors({k: v.detach().cpu().contiguous() for k, v in state.items()}, metadata={"format": "pt"})
    storage.write_bytes_atomic(storage.join(folder, "model.safetensors"), blob)
    storage.write_json(storage.join(folder, "config.json"), config)


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


def fit_expected(
    source: StateDict,
    expected: StateDict,
    report: LoadReport,
    model: str,
    *,
    resize: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    derive: Mapping[str, str] | None = None,
    fresh_ok: set[str] | frozenset[str] = frozenset(),
    drop_ok: set[str] | frozenset[str] = frozenset(),
    shape_hint: str = "",
) -> StateDict:
    """Fit `source` (already in the model's key names) to `expected` (the model's own freshly
    initialised state dict: target keys, shapes, dtypes and fresh values), or raise `WeightError`
    naming `model`.

    - a key in `resize` whose tensor has another shape but the same width is resampled by
      `resize[key]` (reported);
    - a target key missing from `source` is taken from `derive[key]` when given (reported), or left
      at the model's init when listed in `fresh_ok` (reported); otherwise it is an error;
    - a source key the model lacks is dropped only when listed in `drop_ok` (reported);
    - `head.*` of another class count is dropped and freshly initialised (reported);
    - any other shape mismatch is an error (`shape_hint` is appended to its message).
    """
    resize, derive = dict(resize or {}), dict(derive or {})
    out: StateDict = {}
    missing, bad_shape = [], []
    for key, ref in expected.items():
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
        if key in resize and value.shape != ref.shape and value.shape[-1] == ref.shape[-1]:
            old = tuple(value.shape)
            value = resize[key](value)
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
    used = set(source) & set(expected) | {derive[k] for k in derive if k in expected}
    unexpected = sorted(k for k in set(source) - used if k not in drop_ok)
    report.dropped += sorted(k for k in set(source) - used if k in drop_ok)
    problems = fit_problems(missing, unexpected, bad_shape, shape_hint)
    if problems:
        raise WeightError(f"{report.source} does not fit {model}: {problems}")
    return out


def fit_problems(missing: list[str], unexpected: list[str], bad_shape: list[str], shape_hint: str = "") -> str:
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
