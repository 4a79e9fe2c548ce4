"""Inference settings, the clip recipe a decode task gets, and the result of a run (no Ray).

`InferConfig.clip` (a `ClipOverrides`, flags `--clip.num-frames` ...) holds the fields of
`pipeline.data.clips.ClipConfig` a run may set, declared once there (`pipeline.data.overrides`).
Its recipe fields (`pipeline.model.recipe.CLIP_FIELDS`) default to None: "the checkpoint's
recipe" (except `sampling`, "cover" unless set to None). `plan_inference` reads the checkpoint
once, in the driver, and resolves them (`resolve_clip_settings`): a given value that differs from
the recipe is used and warned about, a frame count the model cannot take is a `RecipeError`
unless `allow_resample`. Its decode fields (`DECODE_FIELDS`) keep ClipConfig's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline import aggregate as agg
from pipeline.data.clips import ClipConfig
from pipeline.data.overrides import overrides_of
from pipeline.model.recipe import (
    CLIP_FIELDS, RecipeError, Resolved, fixed_frames, read_recipe, resolve_clip_settings,
)

DECODE_FIELDS = ("clips_per_decode", "max_pixels", "storage_attempts", "storage_backoff_s")
CLIP_FLAGS = "--clip."  # the flags of the `clip` section: --clip.num-frames ...
# What a recipe field left at None stands for (the help of its flag).
UNSET = {
    "num_frames": "the checkpoint's recipe",
    "sampling_rate": "the checkpoint's recipe",
    "sampling": "the recipe's eval protocol",
    "clips": "1; the recipe's with sampling None",
    "crops": "the recipe's",
    "short_side": "the recipe's; follows --clip.crop-size when the recipe resizes to its crop",
    "crop_size": "the recipe's",
}


def _check_clip(clip: Any) -> None:
    """The values a `ClipOverrides` was given (None: not given) must make sense on their own."""
    if clip.sampling not in (None, "uniform", "cover"):
        raise ValueError(f"sampling must be uniform or cover, got {clip.sampling!r}")
    if clip.crops not in (None, 1, 3):
        raise ValueError(f"crops must be 1 or 3, got {clip.crops}")
    for name in ("num_frames", "sampling_rate", "clips", "short_side", "crop_size", "clips_per_decode"):
        v = getattr(clip, name)
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if clip.short_side is not None and clip.crop_size is not None and clip.short_side < clip.crop_size:
        raise ValueError(f"short_side {clip.short_side} < crop_size {clip.crop_size}")


ClipOverrides = overrides_of(
    ClipConfig, (*CLIP_FIELDS, *DECODE_FIELDS), name="ClipOverrides", module=__name__, unset=UNSET,
    defaults={"sampling": "cover"}, check=_check_clip,
    doc="The clip settings of an inference run: ClipConfig's fields, the recipe ones None when not given.")


@dataclass
class InferConfig:
    """Inference settings. The recipe fields of `clip` left at None come from the checkpoint's recipe."""

    clip: ClipOverrides = field(default_factory=ClipOverrides)  # what a clip is and how it is decoded
    allow_resample: bool = False  # accept a frame count other than the model's (its time / position embedding is resampled)
    aggregate: Literal["mean_logits", "mean_probs", "max"] = "mean_logits"
    top_k: int = 5
    batch_size: int = 8  # clips per model call, across videos (each clip is `clip.crops` model inputs)
    actors: int = 0  # most model actors; 0: one per `actor_gpus` of the GPUs the cluster has or its autoscaler can add (else 1)
    min_actors: int = 1  # model actors kept while the run lasts (Ray Data grows the pool from here and lets idle ones go)
    actor_gpus: float | None = None  # GPUs per actor (fractions share a GPU); None: 1 when the cluster has or can add GPUs
    actor_cpus: float = 1.0
    torch_threads: int = 0  # torch threads in a CPU actor; 0: actor_cpus
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 autocast on CUDA (as training), fp32 on CPU
    # Off by default: each actor pays the compile (~1 min on CPU) and the CPU machine measured no gain
    # (docs/BENCHMARKS.md, "Model").
    compile: bool = False  # torch.compile the model's transformer blocks in each actor (eager fallback with one warning)
    decode_num_cpus: float = 1.0  # CPUs per decode task (the autoscaler adds CPU nodes for them)
    decode_memory_mb: int = 512  # memory reserved per decode task (Ray's `memory` resource)
    videos_per_task: int = 1  # videos per decode task (a retried task decodes these again)
    storage_outage_s: float = 300.0  # while the whole store is down every reader waits (one shared backoff) up to this long
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
        if self.aggregate not in agg.AGGREGATES:
            raise ValueError(f"aggregate must be one of {agg.AGGREGATES}, got {self.aggregate!r}")
        for name in ("top_k", "batch_size", "part_size", "min_actors", "videos_per_task",
                     "decode_memory_mb", "block_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("actors", "torch_threads", "actor_restarts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("decode_num_cpus", "actor_cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.actor_gpus is not None and self.actor_gpus < 0:
            raise ValueError(f"actor_gpus must be >= 0, got {self.actor_gpus}")


def clip_config(cfg: InferConfig, values: dict[str, Any]) -> ClipConfig:
    """The clip recipe of a run: the resolved clip fields `values` (see `InferPlan`) and the
    decode fields of `cfg.clip` (`cfg.clip.clips_per_decode` clips per seek pass, ...)."""
    return ClipConfig(**{k: values[k] for k in CLIP_FIELDS}, **{k: getattr(cfg.clip, k) for k in DECODE_FIELDS})


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
    """`cfg.clip`'s recipe fields over `recipe` (pure; raises RecipeError for a frame count the model cannot take).

    What the model sees (frames, rate, short side, crop, crops) comes from the recipe, and a given
    value that differs is warned about; how a video is covered (`sampling`, `clips`) is the job's:
    cover by default, the recipe's eval protocol with `clip.sampling=None`, never a warning."""
    clip = cfg.clip
    given = {k: getattr(clip, k) for k in CLIP_FIELDS if k not in PROTOCOL_FIELDS}
    resolved = resolve_clip_settings(recipe, given, model_frames=fixed_frames(family, model_config),
                                     allow_resample=cfg.allow_resample, flag_prefix=CLIP_FLAGS)
    resolved.values["sampling"] = clip.sampling or recipe["sampling"]
    resolved.values["clips"] = clip.clips or (recipe["clips"] if clip.sampling is None else 1)
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
    except ValueError as e:  # e.g. a --clip.short-side below the recipe's crop
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
