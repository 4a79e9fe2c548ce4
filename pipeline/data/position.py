"""Where a training run is in its data, and which clips each worker reads from there (no Ray).

    layout = Layout(num_rows=120, clips_per_row=1, global_batch=16, steps_per_epoch=7, seed=0)
    spans = step_spans(step=9, rank=1, world=3, layout=layout)   # what rank 1 of 3 reads at step 9
    position(9, layout)   # {"epoch": 1, "clips_consumed": 32, "rows_consumed": 32, ...}

The order of an epoch is fixed by (seed, epoch): a permutation of the manifest rows, each row
expanded to its `clips_per_row` clips (clip_index 0..C-1). Optimizer step `t` of the epoch
consumes the `global_batch` clips at positions [t * E, (t + 1) * E) of that order (the last
`num_rows * C - steps_per_epoch * E` clips of an epoch are dropped). Worker `r` of `W` takes
the contiguous slice `worker_clips(layout, W)[r]` of each step's clips, so after any number of
whole steps the clips consumed are exactly a prefix of the epoch's order, whatever the world
size was: a run resumed with another number of workers starts at that prefix and reads only what
follows. When `C` divides `E` the slices are whole rows (shares of `E / C` rows, differing by
one row), so no row is decoded twice; otherwise they are shares of clips (differing by one
clip), and a row whose clips fall in two slices is decoded by both (each keeps its own clips):
at most one row per worker and step beyond the rows consumed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, num_rows: int, shuffle: bool = True) -> np.ndarray:
    """Row order of one epoch: a seeded permutation (train), the manifest order otherwise."""
    if not shuffle:
        return np.arange(num_rows)
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, epoch, 0x5EED]).permutation(num_rows)


@dataclass(frozen=True)
class Layout:
    """How the epochs of a run are cut into optimizer steps (the same for every world size)."""

    num_rows: int  # manifest rows
    clips_per_row: int  # clips each row yields per epoch (data.clips_per_video)
    global_batch: int  # clips per optimizer step
    steps_per_epoch: int
    seed: int


def shares(global_batch: int, world: int) -> list[int]:
    """Clips of each worker per step (the first `global_batch % world` workers take one more)."""
    base, extra = divmod(global_batch, world)
    return [base + (1 if r < extra else 0) for r in range(world)]


def worker_clips(layout: Layout, world: int) -> list[int]:
    """Clips of each worker per step: shares of whole rows when `clips_per_row` divides the
    global batch, of clips otherwise (sum: the global batch)."""
    unit = layout.clips_per_row if layout.global_batch % layout.clips_per_row == 0 else 1
    return [unit * n for n in shares(layout.global_batch // unit, world)]


def step_spans(step: int, rank: int, world: int, layout: Layout) -> list[dict[str, int]]:
    """The rows worker `rank` of `world` decodes for optimizer step `step` (0-based, over the run):
    one dict per row, `{step, epoch, row, order_pos, clip_lo, clip_hi}` (keep clips
    clip_lo <= clip_index < clip_hi of manifest row `row`, at `order_pos` in the epoch's order)."""
    epoch, t = divmod(step, layout.steps_per_epoch)
    sizes = worker_clips(layout, world)
    lo = t * layout.global_batch + sum(sizes[:rank])
    hi = lo + sizes[rank]
    order = epoch_order(layout.seed, epoch, layout.num_rows)
    c = layout.clips_per_row
    spans = []
    for pos in range(lo // c, -(-hi // c) if hi > lo else lo // c):
        spans.append({"step": step, "epoch": epoch, "row": int(order[pos]), "order_pos": pos,
                      "clip_lo": max(lo, pos * c) - pos * c, "clip_hi": min(hi, (pos + 1) * c) - pos * c})
    return spans


def position(step: int, layout: Layout) -> dict[str, Any]:
    """The data position of a run that has taken `step` optimizer steps: its epoch, the clips and
    whole rows of that epoch's order it consumed (a prefix), and what fixes the order."""
    epoch, t = divmod(step, layout.steps_per_epoch)
    clips = t * layout.global_batch
    return {"epoch": epoch, "clips_consumed": clips, "rows_consumed": clips // layout.clips_per_row,
            "seed": layout.seed, "order": "permutation(seed, epoch) of the manifest rows",
            "num_rows": layout.num_rows, "clips_per_row": layout.clips_per_row,
            "global_batch": layout.global_batch}


def step_of(record: dict[str, Any], layout: Layout) -> int:
    """The optimizer step a data position (`position`'s record) stands at under `layout`."""
    return int(record["epoch"]) * layout.steps_per_epoch + int(record["clips_consumed"]) // layout.global_batch
