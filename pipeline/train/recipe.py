"""The clips of `--eval-only`: the run's data settings resolved against the recipe its checkpoint
records (no Ray).

    plan = eval_plan(cfg, data_keys={"data.crops"})   # only data.crops was set by the user
    plan.data                                       # the DecodeConfig the evaluation decodes with

A `data.*` clip field the user set (YAML, flag or --set) and that differs from the recipe is used
and warned about; the others come from the recipe. A frame count the model would have to resample
for is a ConfigError unless `eval.allow_resample`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

from pipeline import storage
from pipeline.config import ConfigError
from pipeline.data.rows import DecodeConfig
from pipeline.model.recipe import CLIP_FIELDS, RecipeError, fixed_frames, read_recipe, resolve_clip_settings
from pipeline.train.config import TrainJobConfig
from pipeline.train.schedule import run_dir_of


@dataclass
class EvalPlan:
    checkpoint: str
    data: DecodeConfig  # cfg.data with the clip fields resolved
    record: dict[str, Any]  # the `recipe` entry of eval.json
    warnings: list[str]


def eval_plan(cfg: TrainJobConfig, data_keys: Iterable[str] | None = None) -> EvalPlan:
    """Read the checkpoint's recipe and resolve `cfg.data` against it. `data_keys`: the dotted
    keys the user set (`pipeline.cli.explicit_keys`); None counts every data field as set.
    Raises ConfigError (missing / unreadable checkpoint, a frame count the model cannot take)."""
    ckpt = cfg.eval.checkpoint or storage.join(run_dir_of(cfg.run), "model.pt")
    if not storage.exists(ckpt):
        raise ConfigError(f"eval.checkpoint: no model at {ckpt} (train first, or set eval.checkpoint=URI)")
    try:
        family, model_config, recipe, notes = read_recipe(ckpt)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"eval.checkpoint: {e}") from e
    keys = set(data_keys) if data_keys is not None else {f"data.{k}" for k in CLIP_FIELDS}
    given = {k: getattr(cfg.data, k) for k in CLIP_FIELDS if f"data.{k}" in keys}
    try:
        res = resolve_clip_settings(recipe, given, model_frames=fixed_frames(family, model_config),
                                    allow_resample=cfg.eval.allow_resample, flag_prefix="--data.",
                                    resample_flag="--eval.allow-resample")
    except RecipeError as e:
        raise ConfigError(str(e)) from e
    return EvalPlan(ckpt, dataclasses.replace(cfg.data, **res.values), res.as_dict(recipe, notes),
                    notes + res.warnings)
