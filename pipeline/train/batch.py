"""Batch arithmetic of a run: the global batch, how it splits over the workers, the lr scaling.

Pure functions of numbers (no config types, no Ray), shared by the config checks and the schedule.

The global batch (`optim.effective_batch`, clips per optimizer step over all workers) is fixed
for the run, whatever the world size: with `W` workers, worker `r` takes `position.shares(E, W)[r]`
clips per step (`E // W`, the first `E % W` workers one more) in micro-batches of at most
`loop.batch_size` clips, and weights each clip's loss by `W / E`, so DDP's mean over the workers
is the mean over the `E` clips. When `E` divides by `W`, every worker takes `E / W` clips; when
it does not, the shares differ by one clip and the step is still exactly the mean over `E` clips.
"""

from __future__ import annotations

import math

from pipeline.config import ConfigError


def world_range(num_workers: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    """(min, max) workers of `scale.num_workers` (a number, or `[min, max]` for elastic training)."""
    if isinstance(num_workers, int):
        return num_workers, num_workers
    if len(num_workers) != 2:
        raise ConfigError(f"scale.num_workers: expected a number or [min, max], got {list(num_workers)}")
    lo, hi = (int(n) for n in num_workers)
    if lo < 1 or hi < lo:
        raise ConfigError(f"scale.num_workers: [min, max] needs 1 <= min <= max, got [{lo}, {hi}]")
    return lo, hi


def accumulation_steps(effective_batch: int | None, batch_size: int, num_workers: int) -> int:
    """Micro-batches per optimizer step so that `batch_size * num_workers * steps == effective_batch`
    (a fixed world size: the global batch must be a multiple of one micro-batch of every worker)."""
    per_micro = batch_size * num_workers
    if effective_batch is None:
        return 1
    if effective_batch < per_micro or effective_batch % per_micro:
        raise ConfigError(
            f"optim.effective_batch: {effective_batch} is not a positive multiple of "
            f"loop.batch_size x scale.num_workers = {batch_size} x {num_workers} = {per_micro}"
        )
    return effective_batch // per_micro


def global_batch(effective_batch: int | None, batch_size: int, max_workers: int) -> int:
    """Clips per optimizer step: `effective_batch`, or one micro-batch of each of the most workers."""
    return batch_size * max_workers if effective_batch is None else effective_batch


def micro_batches(share: int, batch_size: int) -> int:
    """Micro-batches a worker runs for `share` clips per step."""
    return max(1, math.ceil(share / batch_size))


def scaled_lr(lr: float, reference_batch: int, effective_batch: int) -> float:
    """Linear scaling rule: `lr` is tuned for `reference_batch` clips per step."""
    return lr * effective_batch / reference_batch


def steps_per_epoch(num_clips: int, num_workers: int, batch_size: int, accum: int) -> int:
    """Optimizer steps per epoch: whole global batches of `num_workers * batch_size * accum` clips
    (the epoch's last partial batch is dropped; the same count as `num_clips // num_workers`
    clips per worker in full micro-batches)."""
    return num_clips // (num_workers * batch_size * accum)
