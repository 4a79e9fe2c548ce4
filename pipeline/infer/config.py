"""Inference settings, the clip recipe a decode task gets, and the result of a run (no Ray).

The clip fields of `InferConfig` (`pipeline.model.recipe.CLIP_FIELDS`) default to None: "the
checkpoint's recipe". `plan_inference` reads the checkpoint once, in the driver, and resolves them
(`resolve_clip_settings`): a given value that differs from the recipe is used and warned about, a
frame count the model cannot take is a `RecipeError` unless `allow_resample`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline import aggregate as agg
from pipeline.data.clips import ClipConfig
from pipeline.data.decode import MAX_PIXELS
from pipeline.model.recipe import (
    CLIP_FIELDS, RecipeError, Resolved, fixed_frames, read_recipe, resolve_clip_settings,
)


@dataclass
class InferConfig:
    """Inference settings. The clip fields left at None come from the checkpoint's recipe."""

    num_frames: int | None = None  # frames per clip (None: the checkpoint's recipe)
    sampling_rate: int | None = None  # source frames between sampled frames at 30 fps (None: the checkpoint's recipe)
    sampling: Literal["uniform", "cover"] | None = None  # cover: non-overlapping clips over the whole video (HowTo100M); uniform: `clips` evenly spaced (None: the recipe's)
    clips: int | None = None  # with sampling=uniform: clips per video (None: the recipe's)
    crops: Literal[1, 3] | None = None  # 1 centre crop, or 3 crops along the long side, scores averaged (None: the recipe's)
    short_side: int | None = None  # resize short side to this (None: the recipe's; follows --crop-size when the recipe resizes to its crop)
    crop_size: int | None = None  # square crop side (None: the recipe's)
    allow_resample: bool = False  # accept a frame count other than the model's (its time / position embedding is resampled)
    aggregate: Literal["mean_logits", "mean_probs", "max"] = "mean_logits"
    top_k: int = 5
    batch_size: int = 8  # clips per actor call (each clip is `crops` model inputs)
    actors: int = 0  # model actors; 0: one per GPU in the cluster, else 1
    actor_gpus: float | None = None  # GPUs per actor; None: 1 when the cluster has GPUs
    actor_cpus: float = 1.0
    torch_threads: int = 0  # torch threads in a CPU actor; 0: actor_cpus
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype on CUDA
    # Off by default: each actor pays the compile (~1 min on CPU) and the CPU machine measured no gain
    # (docs/BENCHMARKS.md, "Compiled step").
    compile: bool = False  # torch.compile the model's transformer blocks in each actor (eager fallback with one warning)
    decode_num_cpus: float = 1.0
    max_pixels: int | None = MAX_PIXELS  # width x height above which a video is an error row (admits 4K); None: no cap
    storage_attempts: int = 3  # tries per video while storage fails transiently (5xx, throttling, resets, timeouts)
    storage_backoff_s: float = 2.0  # wait before the second try (doubling after)
    clips_per_decode: int = 8  # clips decoded per decode() call (bounds native-size frames held)
    max_videos_in_flight: int = 0  # decoding + waiting for scores; 0: 2 x decode slots + 2
    # Decoded clips (uint8, in the object store) held by videos waiting for scores, in MiB: no new
    # decode starts while held + (decoding videos x the mean video so far) would pass it; one
    # video at a time always goes (a single longer video is never refused). 0: no byte bound.
    # 2 GiB holds ~1,700 views of 8 x 224 x 224 (1.2 MB each): ~4 h of video in rate-32 cover clips.
    max_mb_in_flight: int = 2048
    max_batches_per_actor: int = 2  # queued actor calls per actor (>= 2 keeps actors fed)
    part_size: int = 16  # finished videos per part file
    actor_restarts: int = 4  # restarts of a model actor whose process or node died
    clip_retries: int = 3  # times a clip whose actor call failed is sent again before its video is an error row
    # Testing hook: the first actor exits once after this many calls (marker `_fault_injected` in the output).
    fail_actor_after_calls: int | None = None
    labels: str | None = None  # labels.json URI; None: labels.json beside the checkpoint
    jsonl: bool = False
    plot: bool = False

    def __post_init__(self) -> None:
        if self.sampling not in (None, "uniform", "cover"):
            raise ValueError(f"sampling must be uniform or cover, got {self.sampling!r}")
        if self.crops not in (None, 1, 3):
            raise ValueError(f"crops must be 1 or 3, got {self.crops}")
        if self.aggregate not in agg.AGGREGATES:
            raise ValueError(f"aggregate must be one of {agg.AGGREGATES}, got {self.aggregate!r}")
        for name in ("top_k", "batch_size", "clips_per_decode", "max_batches_per_actor", "part_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_frames", "sampling_rate", "clips", "short_side", "crop_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        for name in ("max_videos_in_flight", "max_mb_in_flight", "actors", "torch_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("decode_num_cpus", "actor_cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.actor_gpus is not None and self.actor_gpus < 0:
            raise ValueError(f"actor_gpus must be >= 0, got {self.actor_gpus}")
        if self.short_side is not None and self.crop_size is not None and self.short_side < self.crop_size:
            raise ValueError(f"short_side {self.short_side} < crop_size {self.crop_size}")


def clip_config(cfg: InferConfig, values: dict[str, Any]) -> ClipConfig:
    """The clip recipe of a run: the resolved clip fields `values` (see `InferPlan`), decoded
    `cfg.clips_per_decode` clips at a time."""
    return ClipConfig(**{k: values[k] for k in CLIP_FIELDS}, clips_per_decode=cfg.clips_per_decode,
                      max_pixels=cfg.max_pixels, storage_attempts=cfg.storage_attempts,
                      storage_backoff_s=cfg.storage_backoff_s)


@dataclass
class InferPlan:
    """What the driver knows of the checkpoint before any actor starts, and the clip settings."""

    family: str
    model_config: dict[str, Any]
    recipe: dict[str, Any]  # the checkpoint's (or the legacy defaults)
    notes: list[str]  # about the recipe itself (e.g. none recorded)
    resolved: Resolved

    @property
    def warnings(self) -> list[str]:
        return self.notes + self.resolved.warnings

    def record(self) -> dict[str, Any]:
        """The `recipe` entry of summary.json."""
        return self.resolved.as_dict(self.recipe, self.notes)


def resolve_infer(cfg: InferConfig, family: str, model_config: dict[str, Any], recipe: dict[str, Any]) -> Resolved:
    """`cfg`'s clip fields over `recipe` (pure; raises RecipeError for a frame count the model cannot take)."""
    return resolve_clip_settings(recipe, {k: getattr(cfg, k) for k in CLIP_FIELDS},
                                 model_frames=fixed_frames(family, model_config), allow_resample=cfg.allow_resample)


def plan_inference(checkpoint: str, cfg: InferConfig, ckpt: dict[str, Any] | None = None) -> InferPlan:
    """Read the checkpoint's config and recipe (not its actors) and resolve `cfg` against them;
    `ckpt` is the checkpoint dict when the caller has already read it.

    Raises FileNotFoundError / ValueError (RecipeError included) naming the problem.
    """
    family, model_config, recipe, notes = read_recipe(checkpoint, ckpt)
    plan = InferPlan(family, model_config, recipe, notes, resolve_infer(cfg, family, model_config, recipe))
    try:
        clip_config(cfg, plan.resolved.values)
    except ValueError as e:  # e.g. a --short-side below the recipe's crop
        raise RecipeError(f"clip settings {plan.resolved.values}: {e}") from e
    return plan


@dataclass
class InferResult:
    """Counts, timings and where the outputs are."""

    output: str
    predictions: str
    total: int = 0
    ok: int = 0
    errors: int = 0
    skipped: int = 0  # already done by an earlier run
    processed: int = 0  # videos finished in this run
    clips: int = 0  # clips scored in this run
    wall_s: float = 0.0
    decode_s: float = 0.0  # summed decode-task time
    model_busy_s: list[float] = field(default_factory=list)  # per actor
    actor_idle: float = 0.0  # mean over actors of 1 - busy / (time since the actor was ready)
    parts_written: int = 0
    top1: float | None = None  # accuracy over videos whose manifest gives a label
    peak_videos_in_flight: int = 0  # most videos decoding or holding clips at once
    peak_mb_in_flight: float = 0.0  # most MiB of decoded clips held by videos waiting for scores
    peak_batches_per_actor: int = 0  # most calls queued on one actor at once
    clips_resent: int = 0  # clips sent again after their actor call failed
