"""Inference settings, the clip recipe a decode task gets, and the result of a run (no Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline import aggregate as agg
from pipeline.data.clips import ClipConfig


@dataclass
class InferConfig:
    """Inference settings. `None` sizes come from the model's config (frames, image size)."""

    num_frames: int | None = None  # frames per clip (None: the model's)
    sampling_rate: int = 32  # source frames between sampled frames at 30 fps (HowTo100M: 1 in 32)
    sampling: Literal["uniform", "cover"] = "cover"  # cover: non-overlapping clips over the whole video (HowTo100M); uniform: `clips` evenly spaced
    clips: int = 1  # with sampling=uniform: clips per video
    crops: Literal[1, 3] = 1  # 1 centre crop, or 3 crops along the long side (scores averaged)
    short_side: int | None = None  # resize short side to this (None: crop_size)
    crop_size: int | None = None  # None: the model's image size
    aggregate: Literal["mean_logits", "mean_probs", "max"] = "mean_logits"
    top_k: int = 5
    batch_size: int = 8  # clips per actor call (each clip is `crops` model inputs)
    actors: int = 0  # model actors; 0: one per GPU in the cluster, else 1
    actor_gpus: float | None = None  # GPUs per actor; None: 1 when the cluster has GPUs
    actor_cpus: float = 1.0
    torch_threads: int = 0  # torch threads in a CPU actor; 0: actor_cpus
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype on CUDA
    decode_num_cpus: float = 1.0
    clips_per_decode: int = 8  # clips decoded per decode() call (bounds native-size frames held)
    max_videos_in_flight: int = 0  # decoding + waiting for scores; 0: 2 x decode slots + 2
    max_batches_per_actor: int = 2  # queued actor calls per actor (>= 2 keeps actors fed)
    part_size: int = 16  # finished videos per part file
    labels: str | None = None  # labels.json URI; None: labels.json beside the checkpoint
    jsonl: bool = False
    plot: bool = False

    def __post_init__(self) -> None:
        if self.sampling not in ("uniform", "cover"):
            raise ValueError(f"sampling must be uniform or cover, got {self.sampling!r}")
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {self.crops}")
        if self.aggregate not in agg.AGGREGATES:
            raise ValueError(f"aggregate must be one of {agg.AGGREGATES}, got {self.aggregate!r}")
        for name in ("sampling_rate", "clips", "top_k", "batch_size", "clips_per_decode",
                     "max_batches_per_actor", "part_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_frames", "short_side", "crop_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        for name in ("max_videos_in_flight", "actors", "torch_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("decode_num_cpus", "actor_cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.actor_gpus is not None and self.actor_gpus < 0:
            raise ValueError(f"actor_gpus must be >= 0, got {self.actor_gpus}")
        if self.short_side is not None and self.crop_size is not None and self.short_side < self.crop_size:
            raise ValueError(f"short_side {self.short_side} < crop_size {self.crop_size}")


def clip_config(cfg: InferConfig, info: dict[str, Any]) -> ClipConfig:
    """The clip recipe of a run: `cfg`, with the sizes left to the model (frames, crop size)
    filled from the actor's `info()`."""
    crop = cfg.crop_size or info["image_size"]
    return ClipConfig(num_frames=cfg.num_frames or info["num_frames"], sampling_rate=cfg.sampling_rate,
                      sampling=cfg.sampling, clips=cfg.clips, crops=cfg.crops,
                      short_side=cfg.short_side or crop, crop_size=crop,
                      clips_per_decode=cfg.clips_per_decode)


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
    peak_batches_per_actor: int = 0  # most calls queued on one actor at once
