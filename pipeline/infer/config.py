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
    sampling: Literal["uniform", "cover"] | None = "cover"  # cover: non-overlapping clips over the whole video (HowTo100M); uniform: `clips` evenly spaced (None: the recipe's eval protocol)
    clips: int | None = None  # with sampling=uniform: clips per video (None: 1; the recipe's with sampling None)
    crops: Literal[1, 3] | None = None  # 1 centre crop, or 3 crops along the long side, scores averaged (None: the recipe's)
    short_side: int | None = None  # resize short side to this (None: the recipe's; follows --crop-size when the recipe resizes to its crop)
    crop_size: int | None = None  # square crop side (None: the recipe's)
    allow_resample: bool = False  # accept a frame count other than the model's (its time / position embedding is resampled)
    aggregate: Literal["mean_logits", "mean_probs", "max"] = "mean_logits"
    top_k: int = 5
    batch_size: int = 8  # clips per model call, across videos (each clip is `crops` model inputs)
    actors: int = 0  # most model actors; 0: one per `actor_gpus` of the GPUs the cluster has or its autoscaler can add (else 1)
    min_actors: int = 1  # model actors kept while the run lasts (Ray Data grows the pool from here and lets idle ones go)
    actor_gpus: float | None = None  # GPUs per actor (fractions share a GPU); None: 1 when the cluster has or can add GPUs
    actor_cpus: float = 1.0
    torch_threads: int = 0  # torch threads in a CPU actor; 0: actor_cpus
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 autocast on CUDA (as training), fp32 on CPU
    # Off by default: each actor pays the compile (~1 min on CPU) and the CPU machine measured no gain
    # (docs/BENCHMARKS.md, "Compiled step").
    compile: bool = False  # torch.compile the model's transformer blocks in each actor (eager fallback with one warning)
    decode_num_cpus: float = 1.0  # CPUs per decode task (the autoscaler adds CPU nodes for them)
    decode_memory_mb: int = 512  # memory reserved per decode task (Ray's `memory` resource)
    videos_per_task: int = 1  # videos per decode task (a retried task decodes these again)
    max_pixels: int | None = MAX_PIXELS  # width x height above which a video is an error row (admits 4K); None: no cap
    storage_attempts: int = 3  # tries per video while storage fails transiently (5xx, throttling, resets, timeouts)
    storage_backoff_s: float = 2.0  # wait before the second try (doubling after)
    storage_outage_s: float = 300.0  # while the whole store is down every reader waits (one shared backoff) up to this long
    clips_per_decode: int = 8  # clips per seek pass (bounds the frames a reader holds)
    block_mb: int = 16  # most MiB of decoded clips per Ray Data block (a long video streams through in blocks this size)
    part_size: int = 16  # finished videos per part file
    actor_restarts: int = 20  # restarts of a model actor whose process or node died (spot nodes); past them the videos left are retryable error rows
    # The autoscaler config a `ray up` head runs (read for its GPU node types when Ray reports no
    # cluster config of its own, as KubeRay does).
    autoscaler_config: str = "~/ray_bootstrap_config.yaml"
    # Testing hook: the first actor exits once after this many calls (marker `_fault_injected` in the output).
    fail_actor_after_calls: int | None = None
    min_model_call_s: float = 0.0  # testing hook: each model call lasts at least this (a slow model on fake GPUs)
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
        for name in ("top_k", "batch_size", "clips_per_decode", "part_size", "min_actors", "videos_per_task",
                     "decode_memory_mb", "block_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_frames", "sampling_rate", "clips", "short_side", "crop_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        for name in ("actors", "torch_threads", "actor_restarts"):
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


PROTOCOL_FIELDS = ("sampling", "clips")  # how a video is covered: the job's choice, not the model's recipe


def resolve_infer(cfg: InferConfig, family: str, model_config: dict[str, Any], recipe: dict[str, Any]) -> Resolved:
    """`cfg`'s clip fields over `recipe` (pure; raises RecipeError for a frame count the model cannot take).

    What the model sees (frames, rate, short side, crop, crops) comes from the recipe, and a given
    value that differs is warned about; how a video is covered (`sampling`, `clips`) is the job's:
    cover by default, the recipe's eval protocol with `sampling=None`, never a warning."""
    given = {k: getattr(cfg, k) for k in CLIP_FIELDS if k not in PROTOCOL_FIELDS}
    resolved = resolve_clip_settings(recipe, given, model_frames=fixed_frames(family, model_config),
                                     allow_resample=cfg.allow_resample)
    resolved.values["sampling"] = cfg.sampling or recipe["sampling"]
    resolved.values["clips"] = cfg.clips or (recipe["clips"] if cfg.sampling is None else 1)
    return resolved


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
    clips_total: int = 0  # clips of the ok rows of the whole output folder
    wall_s: float = 0.0
    decode_s: float = 0.0  # summed decode-task time
    model_busy_s: list[float] = field(default_factory=list)  # per actor
    actor_idle: float = 0.0  # mean over actors of 1 - busy / (time since the actor was ready)
    parts_written: int = 0
    top1: float | None = None  # accuracy over videos whose manifest gives a label
    actors_seen: int = 0  # model actors that scored clips (the pool grows and shrinks)
    model_nodes: int = 0  # nodes those actors ran on
    gpus_now: float = 0.0  # GPUs in the cluster when the run started
    gpus_max: float = 0.0  # the most GPUs its node types can bring (0: unknown)
    num_gpus: float = 0.0  # per actor
    max_actors: int = 0
