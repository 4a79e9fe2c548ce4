"""A worker's train stream: its clips of each optimizer step, from the run's data position.

    stream = open_stream(cfg, plan, table_ref, start_step=step, rank=rank, world=world)
    micro = stream.step(step)        # the micro-batches of this worker for optimizer step `step`

Each worker reads its own Ray Data dataset (`pipeline.data.dataset.build_position_stream`): the
rows of its slice of every step from `start_step` on, in order. A run resumed at a step, with
any number of workers, decodes nothing it consumed before. `decoded` / `consumed` count the
clips this worker's decodes made and the clips it trained on.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterator

import numpy as np
import ray.train
import torch

from pipeline import storage
from pipeline.data.position import position, step_of, worker_clips
from pipeline.train.audit import ClipLog
from pipeline.train.config import TrainJobConfig
from pipeline.train.schedule import Plan, layout_of, resume_skip

# every column a given train dataset's batches carry to the step (Ray's collate looks up each
# column it is given; absent ones are fine)
BATCH_DTYPES = {"frames": torch.uint8, "label": torch.int64, "decoded_frames": torch.int64, "kept_frames": torch.int64}

TENSOR_COLUMNS = {"frames": torch.uint8, "label": torch.int64, "decoded_frames": torch.int64,
                  "kept_frames": torch.int64}
RECORD_COLUMNS = ("epoch", "video_id", "clip_index")


class StepStream:
    """This worker's clips, cut into the micro-batches of each step (at most `batch_size` clips).

    A step whose clips were all lost to bad videos gets one all-zero clip marked `dummy` (the
    loop trains it with weight 0), so every worker still joins the step's gradient all-reduce."""

    def __init__(self, blocks: Iterator[dict[str, np.ndarray]], *, batch_size: int, share: int,
                 clip_shape: tuple[int, ...]):
        self.blocks, self.batch_size, self.share, self.clip_shape = blocks, batch_size, share, clip_shape
        self.pending: dict[str, np.ndarray] | None = None
        self.done = False
        self.decoded = 0  # clips this worker's decodes made (kept or not)
        self.consumed = 0  # clips handed to training

    def _pull(self) -> bool:
        block = next(self.blocks, None)
        if block is None:
            self.done = True
            return False
        self.decoded += int(np.asarray(block["views_decoded"]).sum())
        if self.pending is None or not len(self.pending["step"]):
            self.pending = dict(block)
        else:
            self.pending = {k: np.concatenate([self.pending[k], block[k]]) for k in self.pending}
        return True

    def step(self, step: int) -> list[dict[str, Any]]:
        """The micro-batches of optimizer step `step` (steps are asked for in order)."""
        while not self.done and not self._complete(step):
            self._pull()
        if self.pending is None:
            return [self._dummy()]
        steps = self.pending["step"]
        mine = int(np.searchsorted(steps, step, side="right"))
        first = int(np.searchsorted(steps, step, side="left"))
        rows = {k: v[first:mine] for k, v in self.pending.items()}
        self.pending = {k: v[mine:] for k, v in self.pending.items()}
        n = mine - first
        if n == 0:
            return [self._dummy()]
        self.consumed += n
        return [_to_batch({k: v[i:i + self.batch_size] for k, v in rows.items()}) for i in range(0, n, self.batch_size)]

    def _complete(self, step: int) -> bool:
        """All of the step's clips are here: its share, or a clip of a later step (some were lost)."""
        if self.pending is None:
            return False
        steps = self.pending["step"]
        return int((steps == step).sum()) >= self.share or bool((steps > step).any())

    def _dummy(self) -> dict[str, Any]:
        return {"frames": torch.zeros((1, *self.clip_shape), dtype=torch.uint8),
                "label": torch.zeros(1, dtype=torch.int64), "dummy": True}


def _to_batch(cols: dict[str, np.ndarray]) -> dict[str, Any]:
    # Ray's blocks are read-only views: copy those (torch tensors must be writable)
    batch: dict[str, Any] = {k: torch.from_numpy(np.require(cols[k], requirements=["C", "W"])).to(t)
                             for k, t in TENSOR_COLUMNS.items()}
    for k in RECORD_COLUMNS:
        batch[k] = cols[k]
    return batch


def open_stream(cfg: TrainJobConfig, plan: Plan, table_ref: Any, *, start_step: int, rank: int,
                world: int) -> StepStream:
    """This worker's `StepStream` from `start_step` to the end of the run."""
    from pipeline.data.dataset import build_position_stream

    ds = build_position_stream(table_ref, cfg.data, layout=layout_of(plan), start_step=start_step,
                               end_step=plan.total_steps, rank=rank, world=world,
                               error_uri=storage.join(plan.run_dir, "errors"))
    blocks = ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=cfg.loop.prefetch_batches)
    crop = cfg.data.crop_size
    return StepStream(iter(blocks), batch_size=cfg.loop.batch_size, share=worker_clips(layout_of(plan), world)[rank],
                      clip_shape=(cfg.data.num_frames, crop, crop, 3))


class TrainData:
    """This worker's train batches: the run's manifest stream from its data position
    (`pipeline.train.stream`), or, for a given "train" dataset, Ray Train's shard of it with the
    consumed micro-batches skipped (`train_batches`)."""

    def __init__(self, cfg: TrainJobConfig, plan: Plan, table: list[Any] | None, *, step: int, rank: int,
                 world: int, device: torch.device):
        self.plan, self.world, self.device = plan, world, device
        self.stream = self.shard = None
        if table is not None:
            self.stream = open_stream(cfg, plan, table[0], start_step=step, rank=rank, world=world)
        else:
            self.shard = train_batches(cfg, plan, step, rank)
        self.clip_log = None
        if cfg.loop.record_clips:
            attempt = int(all_reduce_sum([time.time_ns() // 1000 if rank == 0 else 0], device)[0])
            self.clip_log = ClipLog(plan.run_dir, rank, attempt)

    def batches(self, step: int) -> tuple[Iterator[dict[str, Any]], int | None, float | None]:
        """(micro-batches of `step`, how many, loss weight per clip); None, None: the plan's."""
        if self.stream is None:
            return self.shard, None, None
        micro = self.stream.step(step)
        if self.clip_log is not None:
            for batch in micro:
                self.clip_log.add(step, batch)
        return iter(micro), len(micro), self.world / self.plan.effective_batch

    def counts(self) -> tuple[int, int] | None:
        """(clips decoded, clips consumed) by all workers since this attempt started (collective)."""
        if self.stream is None:
            return None
        decoded, consumed = all_reduce_sum([float(self.stream.decoded), float(self.stream.consumed)], self.device)
        return int(decoded), int(consumed)

    def written(self, step: int) -> None:
        if self.clip_log is not None:
            self.clip_log.write(step)


def start_position(plan: Plan, step: int, saved: dict[str, Any] | None, *, streaming: bool, rank: int,
                   world: int, batch_size: int) -> tuple[dict[str, Any] | None, str | None, int]:
    """(the data position a worker's stream starts at, a warning when the checkpoint recorded
    another one: a config that cuts the epochs into other steps, this worker's micro-batches per
    step). No position for a given train dataset (its stream has no row order)."""
    if not streaming:
        return None, None, plan.accum
    layout = layout_of(plan)
    here = position(step, layout)
    accum = max(1, -(-worker_clips(layout, world)[rank] // batch_size))
    if saved is not None and step_of(saved, layout) != step:
        return here, (f"the checkpoint's data position {saved} is not step {step}'s under this config "
                      f"({here}); the stream starts at step {step}'s"), accum
    return here, None, accum


def train_batches(cfg: TrainJobConfig, plan: Plan, step: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
    """This worker's train stream, past the micro-batches a run resumed at `step` already consumed.

    One stream over all epochs (the builder reshuffles and resamples clips per epoch); an
    uninterrupted run consumes `step * accum` micro-batches by step `step`, so a resumed one skips
    exactly that many (counted from the epoch the stream was built to start at).
    """
    shard = ray.train.get_dataset_shard("train")
    batches = iter(shard.iter_torch_batches(
        batch_size=cfg.loop.batch_size, dtypes=BATCH_DTYPES, drop_last=True,
        prefetch_batches=cfg.loop.prefetch_batches))
    skip = resume_skip(step, plan)
    t0 = time.perf_counter()
    for _ in range(skip):
        next(batches, None)
    if skip and rank == 0:
        sys.stdout.write(f"[train] skipped {skip} consumed micro-batches in {time.perf_counter() - t0:.1f}s\n")
        sys.stdout.flush()
    return batches


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()
