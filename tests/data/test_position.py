"""The data position of a training run (pipeline.data.position): each epoch's clips cut into
steps and worker slices, the same at every world size, so a resume reads only what follows."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.data.position import Layout, epoch_order, position, shares, step_of, step_spans, worker_clips


def _clips(step: int, rank: int, world: int, layout: Layout) -> list[tuple[int, int, int]]:
    """(epoch, manifest row, clip_index) that `rank` of `world` consumes at `step`."""
    return [(s["epoch"], s["row"], c) for s in step_spans(step, rank, world, layout)
            for c in range(s["clip_lo"], s["clip_hi"])]


def _run(layout: Layout, worlds: list[tuple[int, int, int]]) -> Counter:
    """Clips consumed by a run whose steps [a, b) ran on w workers, for each (a, b, w)."""
    got: Counter = Counter()
    for a, b, world in worlds:
        for step in range(a, b):
            for rank in range(world):
                got.update(_clips(step, rank, world, layout))
    return got


@pytest.mark.parametrize("rows, clips, batch", [(23, 1, 6), (10, 3, 7), (12, 4, 8), (9, 2, 5)])
def test_every_world_size_consumes_each_clip_of_each_epoch_once(rows, clips, batch):
    spe = rows * clips // batch
    layout = Layout(num_rows=rows, clips_per_row=clips, global_batch=batch, steps_per_epoch=spe, seed=3)
    whole = _run(layout, [(0, 2 * spe, 2)])
    assert set(whole.values()) == {1} and len(whole) == 2 * spe * batch
    for epoch in range(2):  # the first spe * batch clips of the epoch's order, none twice
        order = epoch_order(3, epoch, rows)
        want = {(epoch, int(order[p // clips]), p % clips) for p in range(spe * batch)}
        assert {k for k in whole if k[0] == epoch} == want
    # killed after ~70 % of epoch 1 on 2 workers, resumed on 3, then resized to 1: the same clips
    k = spe + max(1, (7 * spe) // 10)
    assert _run(layout, [(0, k, 2), (k, k + 1, 3), (k + 1, 2 * spe, 1)]) == whole
    for world in (1, 2, 3, 5):
        assert _run(layout, [(0, 2 * spe, world)]) == whole


def test_slices_are_whole_rows_when_the_clips_per_row_divide_the_global_batch():
    layout = Layout(num_rows=40, clips_per_row=4, global_batch=12, steps_per_epoch=13, seed=0)
    for world in (1, 2, 3, 4, 5):
        assert sum(worker_clips(layout, world)) == 12 and all(n % 4 == 0 for n in worker_clips(layout, world))
        rows = Counter((s["epoch"], s["row"]) for step in range(13) for rank in range(world)
                       for s in step_spans(step, rank, world, layout))
        assert set(rows.values()) == {1}  # no row decoded twice
        assert all(s["clip_hi"] - s["clip_lo"] == 4 for step in range(13) for rank in range(world)
                   for s in step_spans(step, rank, world, layout))


def test_a_worker_decodes_at_most_one_row_beyond_its_slice():
    """Otherwise a row whose clips straddle two slices is decoded by both, each keeping its own."""
    layout = Layout(num_rows=40, clips_per_row=4, global_batch=10, steps_per_epoch=16, seed=0)
    for world in (1, 2, 3, 4):
        assert worker_clips(layout, world) == shares(10, world)
        for step in range(16):
            for rank, share in enumerate(worker_clips(layout, world)):
                spans = step_spans(step, rank, world, layout)
                assert sum(s["clip_hi"] - s["clip_lo"] for s in spans) == share
                assert len(spans) <= -(-share // 4) + 1


def test_shares_keep_the_global_batch_at_every_world_size():
    assert shares(64, 16) == [4] * 16
    assert shares(64, 6) == [11] * 4 + [10] * 2 and sum(shares(64, 6)) == 64
    assert shares(7, 3) == [3, 2, 2]


def test_position_records_epoch_and_rows_consumed_and_maps_back_to_the_step():
    layout = Layout(num_rows=120, clips_per_row=2, global_batch=16, steps_per_epoch=15, seed=7)
    p = position(20, layout)
    assert (p["epoch"], p["clips_consumed"], p["rows_consumed"], p["seed"]) == (1, 80, 40, 7)
    assert all(step_of(position(s, layout), layout) == s for s in range(0, 60))
    assert position(15, layout)["epoch"] == 1 and position(15, layout)["clips_consumed"] == 0


def test_the_order_is_fixed_by_seed_and_epoch():
    assert (epoch_order(1, 2, 50) == epoch_order(1, 2, 50)).all()
    assert sorted(epoch_order(1, 2, 50).tolist()) == list(range(50))
    assert (epoch_order(1, 2, 50) != epoch_order(1, 3, 50)).any()
    assert (epoch_order(1, 2, 50) != epoch_order(2, 2, 50)).any()
