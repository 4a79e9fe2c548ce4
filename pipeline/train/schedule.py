"""The schedule of a run in optimizer steps: the lr, the plan the driver fixes, the data layout,
the micro-batches a resumed run over a given dataset skips, and when the worker loop logs,
evaluates and checkpoints.

Pure functions of the config and the corpus size: every worker and every restart computes the
same, at every world size (the global batch is fixed, `pipeline.train.batch`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import storage
from pipeline.config import ConfigError
from pipeline.data.position import Layout
from pipeline.train.batch import (  # noqa: F401 - re-exported: the batch arithmetic of a schedule
    accumulation_steps, global_batch, micro_batches, scaled_lr, steps_per_epoch, world_range,
)

if TYPE_CHECKING:
    from pipeline.train.config import LoopSection, RunSection, TrainJobConfig


# ----------------------------------------------------------------------------------- lr


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "step",
    milestones: list[int] | tuple[int, ...] = (),
    gamma: float = 0.1,
    min_lr: float = 0.0,
) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup to `base_lr` over
    `warmup_steps`, then `step` (x gamma at each milestone step) or `cosine` (to `min_lr` at
    `total_steps`)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "step":
        return base_lr * gamma ** sum(1 for m in milestones if step >= m)
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


# ----------------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """Numbers the driver fixes before training: the same on every worker and every restart."""

    num_classes: int
    labels: list[str]
    num_train_clips: int
    steps_per_epoch: int
    total_steps: int
    accum: int  # micro-batches per step of a worker at the largest world size
    effective_batch: int  # clips per optimizer step over all workers, at every world size
    base_lr: float  # after linear scaling
    warmup_steps: int
    milestones: list[int]  # in steps
    run_dir: str
    data_start_epoch: int = 0  # a given train dataset (fit(datasets=...)) starts at this epoch
    num_rows: int = 0  # manifest rows of the train split (0: a given dataset, no row order)
    clips_per_row: int = 1  # clips per row and epoch (data.clips_per_video)
    seed: int = 0  # fixes each epoch's row order (loop.seed)
    min_workers: int = 0
    max_workers: int = 0


def make_plan(cfg: TrainJobConfig, num_train_clips: int, labels: list[str], data_start_epoch: int = 0,
              num_rows: int = 0) -> Plan:
    """Steps, the global batch and the lr schedule in steps, from the config and the corpus size.

    A fixed world size needs `optim.effective_batch` to be a multiple of one micro-batch of every
    worker (accumulation steps, as always); an elastic one (`scale.num_workers: [min, max]`) keeps
    `optim.effective_batch` (default: `loop.batch_size` x max) at every size, shared as evenly
    as the clips allow (`pipeline.train.batch`)."""
    lo, hi = world_range(cfg.scale.num_workers)
    batch = cfg.loop.batch_size
    if lo == hi:
        accum = accumulation_steps(cfg.optim.effective_batch, batch, hi)
        effective = batch * hi * accum
    else:
        effective = global_batch(cfg.optim.effective_batch, batch, hi)
        accum = micro_batches(-(-effective // hi), batch)
    spe = num_train_clips // effective
    if spe < 1:
        raise ConfigError(
            f"loop.batch_size: {num_train_clips} training clips give no full step of "
            f"{effective} clips (batch_size x num_workers x accumulation); lower loop.batch_size"
        )
    num_classes = int(cfg.model.overrides.get("num_classes", len(labels)))
    if labels and num_classes < len(labels):
        raise ConfigError(f"model.overrides.num_classes: {num_classes} < {len(labels)} labels in the manifest")
    return Plan(
        num_classes=num_classes,
        labels=list(labels),
        num_train_clips=num_train_clips,
        steps_per_epoch=spe,
        total_steps=spe * cfg.loop.epochs,
        accum=accum,
        effective_batch=effective,
        base_lr=scaled_lr(cfg.optim.lr, cfg.optim.reference_batch, effective),
        warmup_steps=int(round(cfg.optim.warmup_epochs * spe)),
        milestones=[int(round(m * spe)) for m in cfg.optim.milestones],
        run_dir=run_dir_of(cfg.run),
        data_start_epoch=data_start_epoch,
        num_rows=num_rows,
        clips_per_row=cfg.data.clips_per_video,
        seed=cfg.loop.seed,
        min_workers=lo,
        max_workers=hi,
    )


def layout_of(plan: Plan) -> Layout:
    """How the run's epochs are cut into steps (`pipeline.data.position`)."""
    return Layout(num_rows=plan.num_rows, clips_per_row=plan.clips_per_row, global_batch=plan.effective_batch,
                  steps_per_epoch=plan.steps_per_epoch, seed=plan.seed)


def resume_skip(step: int, plan: Plan) -> int:
    """Micro-batches of a given train dataset (`fit(datasets=...)`, fixed world size, no row order
    to seek in) to skip when resuming at `step`: those an uninterrupted run consumed since the
    first epoch of the stream (0 when the stream starts later). The manifest stream skips nothing."""
    return max(0, step - plan.data_start_epoch * plan.steps_per_epoch) * plan.accum


def run_dir_of(run: RunSection) -> str:
    """`<storage_path>/<name>`: where Ray Train and we keep everything of one run."""
    return storage.join(run.storage_path, run.name)


def schedule_of(cfg: TrainJobConfig, plan: Plan) -> dict[str, Any]:
    """The keyword arguments of `lr_at` for this run."""
    return {
        "base_lr": plan.base_lr, "total_steps": plan.total_steps, "warmup_steps": plan.warmup_steps,
        "schedule": cfg.optim.schedule, "milestones": list(plan.milestones), "gamma": cfg.optim.gamma,
        "min_lr": cfg.optim.min_lr,
    }


# ----------------------------------------------------------------------------------- loop rules
# `step` is the number of optimizer steps taken so far (1 after the first step).


def should_eval(step: int, plan: Plan, loop: LoopSection) -> bool:
    """Validate at the end of every `loop.eval_every_epochs`-th epoch and of the last one."""
    if step % plan.steps_per_epoch:
        return False
    return (step // plan.steps_per_epoch) % loop.eval_every_epochs == 0 or step == plan.total_steps


def should_log(step: int, plan: Plan, loop: LoopSection) -> bool:
    """Log train metrics every `loop.log_every_steps` and with each validation. A log is a round
    trip through the Ray Train controller, so not at every (possibly short) epoch end."""
    return step % loop.log_every_steps == 0 or should_eval(step, plan, loop)


def should_checkpoint(step: int, plan: Plan, loop: LoopSection) -> bool:
    """Checkpoint every `loop.checkpoint_every_steps` and at the last step."""
    return step % loop.checkpoint_every_steps == 0 or step == plan.total_steps
