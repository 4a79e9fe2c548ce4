"""The clip recipe a checkpoint carries, and how a run's clip settings resolve against it (no Ray).

    meta = {"recipe": make_recipe(cfg.data, model.config, labels=names)}    # when saving
    recipe, notes = checkpoint_recipe(read_checkpoint(uri))                  # when loading
    res = resolve_clip_settings(recipe, {"sampling_rate": 8}, model_frames=fixed_frames(...))

A recipe is a plain dict (weights_only-safe): the clip fields of `pipeline.data.clips.ClipConfig`
that decide what the model sees and how it is evaluated (`CLIP_FIELDS`), the input normalisation
(`mean`, `std`) and the class names (`labels`, or None). A checkpoint written before recipes
existed gets `LEGACY` (the inference defaults of that time) with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

RECIPE_KEY = "recipe"
CLIP_FIELDS = ("num_frames", "sampling_rate", "crop_size", "short_side", "sampling", "clips", "crops")
# A checkpoint without a recipe: these, with num_frames / crop_size / short_side from the model's
# config (frames, image size, image size). They are what inference used before recipes existed.
LEGACY = {"sampling_rate": 32, "sampling": "cover", "clips": 1, "crops": 1}


class RecipeError(ValueError):
    """A clip setting the model cannot take (e.g. a frame count it would have to resample for)."""


def make_recipe(clip: Any, model_config: Any, labels: list[str] | None = None) -> dict[str, Any]:
    """The recipe of `clip` (a ClipConfig / DecodeConfig, or a mapping with its fields) for a model
    with `model_config` (its dataclass or dict: num_frames, image_size, mean, std)."""
    get = clip.get if isinstance(clip, Mapping) else (lambda k, d=None: getattr(clip, k, d))
    model = model_config if isinstance(model_config, Mapping) else vars(model_config)
    crop = get("crop_size") or int(model["image_size"])
    recipe: dict[str, Any] = {
        "num_frames": int(get("num_frames") or model["num_frames"]),
        "sampling_rate": int(get("sampling_rate", LEGACY["sampling_rate"])),
        "crop_size": int(crop),
        "short_side": int(get("short_side") or crop),
        "sampling": str(get("sampling", "uniform")),
        "clips": int(get("clips", 1)),
        "crops": int(get("crops", 1)),
        "mean": [float(v) for v in model["mean"]],
        "std": [float(v) for v in model["std"]],
        "labels": [str(n) for n in labels] if labels is not None else None,
    }
    return recipe


def checkpoint_recipe(ckpt: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(recipe, warnings) of a `pipeline.model/1` checkpoint dict: its own, or the legacy defaults
    filled from its model config (one warning saying so)."""
    meta = ckpt.get("meta") or {}
    recipe = meta.get(RECIPE_KEY)
    if isinstance(recipe, Mapping) and all(k in recipe for k in CLIP_FIELDS):
        return dict(recipe), []
    labels = meta.get("labels")
    names = list(labels) if isinstance(labels, (list, tuple)) else None
    recipe = make_recipe(LEGACY, ckpt["config"], labels=names)
    note = (f"the checkpoint records no clip recipe (written before recipes): using the defaults "
            f"sampling_rate={LEGACY['sampling_rate']} sampling={LEGACY['sampling']} clips=1 crops=1, "
            f"frames / crop / short side = the model's {recipe['num_frames']} / {recipe['crop_size']} / "
            f"{recipe['short_side']}")
    return recipe, [note]


def fixed_frames(family: str, model_config: Mapping[str, Any]) -> int | None:
    """The frame count a model takes without resampling a learned time / position embedding, or
    None when any count works (a space-only TimeSformer has no time embedding)."""
    if family == "timesformer" and model_config.get("attention") == "space_only":
        return None
    return int(model_config["num_frames"])


@dataclass
class Resolved:
    """Clip settings resolved against a recipe."""

    values: dict[str, Any]  # every CLIP_FIELDS value the run uses
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> {"recipe", "used"}
    warnings: list[str] = field(default_factory=list)

    def as_dict(self, recipe: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
        """JSON-safe record for summary.json."""
        return {"checkpoint": dict(recipe), "used": dict(self.values), "overrides": dict(self.overrides),
                "warnings": list(notes) + list(self.warnings)}


def resolve_clip_settings(recipe: Mapping[str, Any], given: Mapping[str, Any], *, model_frames: int | None,
                          allow_resample: bool = False, flag_prefix: str = "--",
                          resample_flag: str = "--allow-resample") -> Resolved:
    """The clip settings of a run: `given` (the fields the user set; None values count as not
    set) over `recipe`. A given value that differs from the recipe is used and warned about. A
    frame count other than `model_frames` raises `RecipeError` unless `allow_resample`.

    `short_side` follows a given `crop_size` when it is not given itself and the recipe's short
    side equals its crop (the usual "resize to the crop" recipe).
    """
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - set(CLIP_FIELDS))
    if unknown:
        raise ValueError(f"not clip recipe fields: {unknown}")
    values = {k: recipe[k] for k in CLIP_FIELDS}
    if "crop_size" in given and "short_side" not in given and recipe["short_side"] == recipe["crop_size"]:
        values["short_side"] = given["crop_size"]
    values.update(given)
    out = Resolved(values=values)
    for name in CLIP_FIELDS:
        if values[name] != recipe[name]:
            out.overrides[name] = {"recipe": recipe[name], "used": values[name]}
            flag = flag_prefix + name.replace("_", "-")
            how = "given" if name in given else "follows the crop size"
            out.warnings.append(f"{flag} {values[name]} ({how}) differs from the checkpoint's recipe "
                                f"({recipe[name]}); using {values[name]}")
    frames = values["num_frames"]
    if model_frames is not None and frames != model_frames:
        if not allow_resample:
            raise RecipeError(
                f"{flag_prefix}num-frames {frames}: the model takes {model_frames} frames (its time / position "
                f"embedding would be resampled); pass {resample_flag} to run it anyway")
        out.warnings.append(f"the model's {model_frames}-frame embedding is resampled to {frames} frames "
                            f"({resample_flag})")
    return out


def read_recipe(uri: str, ckpt: dict[str, Any] | None = None) -> tuple[str, dict[str, Any], dict[str, Any], list[str]]:
    """(family, model config, recipe, warnings) of the checkpoint at `uri` (weights_only); `ckpt`,
    the checkpoint dict when the caller has already read it.

    A missing file is FileNotFoundError; an unreadable one or another format is ValueError.
    """
    from pipeline import model as models
    from pipeline import storage

    if ckpt is None:
        if not storage.exists(uri):
            raise FileNotFoundError(f"checkpoint not found: {uri}")
        try:
            ckpt = models.read_checkpoint(uri)
        except ValueError:
            raise
        except Exception as e:  # a truncated / corrupt file: torch raises several kinds
            raise ValueError(f"{uri}: not a readable checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    recipe, notes = checkpoint_recipe(ckpt)
    return str(ckpt["family"]), dict(ckpt["config"]), recipe, notes
