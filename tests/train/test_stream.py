"""The train stream of a worker from the run's data position (pipeline.train.stream over
pipeline.data.dataset.build_position_stream), on a real local Ray with real videos: an
interrupted run resumed at another world size consumes the same clips as an uninterrupted one
and decodes nothing it consumed before."""

from __future__ import annotations

from collections import Counter

import pytest
import ray

from pipeline.config import from_dict
from pipeline.data.manifest import load_manifest
from pipeline.data.position import position
from pipeline.data.rows import manifest_table
from pipeline.train.config import TrainJobConfig
from pipeline.train.schedule import layout_of, make_plan
from pipeline.train.stream import open_stream

EPOCH_STEPS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """20 train videos (64 x 48, 1 s)."""
    from pipeline.data.synthetic import make_corpus

    return make_corpus(str(tmp_path_factory.mktemp("corpus")), videos=20, seconds=1.0, seed=2, val_fraction=0.0)


def _cfg(corpus: str, run_dir, **loop) -> TrainJobConfig:
    """2 clips per video, 6 clips per step (3 whole rows): 40 clips -> 6 steps per epoch."""
    return from_dict(TrainJobConfig, {
        "train_manifest": corpus, "val_manifest": corpus,
        "data": {"num_frames": 4, "sampling_rate": 2, "crop_size": 32, "train_short_side": [32, 40],
                 "clips_per_video": 2, "num_cpus": 0.5, "memory": 0, "batch_size": 2},
        "loop": {"epochs": 1, "batch_size": 2, **loop}, "optim": {"effective_batch": 6},
        "scale": {"num_workers": [1, 3]}, "run": {"storage_path": str(run_dir), "name": "stream"}})


def _consume(cfg, plan, table, start: int, end: int, world: int) -> tuple[Counter, int, int]:
    """Run steps [start, end) on `world` workers (in turn, in this process): (video_id, clip)
    consumed, clips decoded, clips consumed."""
    got: Counter = Counter()
    decoded = consumed = 0
    for rank in range(world):
        stream = open_stream(cfg, plan, table, start_step=start, rank=rank, world=world)
        for step in range(start, end):
            for batch in stream.step(step):
                assert not batch.get("dummy"), "no clip of these videos is lost"
                assert len(batch["label"]) <= cfg.loop.batch_size
                got.update(zip(batch["video_id"], batch["clip_index"].tolist()))
        decoded, consumed = decoded + stream.decoded, consumed + stream.consumed
    return got, decoded, consumed


def test_a_run_killed_at_70_percent_and_resumed_on_3_workers_consumes_the_uninterrupted_clips(ray_local, corpus,
                                                                                               tmp_path):
    cfg = _cfg(corpus, tmp_path)
    rows = load_manifest(corpus).rows
    plan = make_plan(cfg, len(rows) * 2, ["a"], num_rows=len(rows))
    assert (plan.steps_per_epoch, plan.total_steps, plan.effective_batch) == (EPOCH_STEPS, EPOCH_STEPS, 6)
    table = ray.put(manifest_table(rows))

    whole, decoded, consumed = _consume(cfg, plan, table, 0, EPOCH_STEPS, world=2)
    assert consumed == decoded == sum(whole.values()) == EPOCH_STEPS * 6  # whole rows: nothing decoded twice
    assert set(whole.values()) == {1}

    killed_at = 4  # 4 of 6 steps: the checkpoint records the position ...
    where = position(killed_at, layout_of(plan))
    assert (where["epoch"], where["clips_consumed"], where["rows_consumed"]) == (0, 24, 12)
    before, _, _ = _consume(cfg, plan, table, 0, killed_at, world=2)
    after, decoded, consumed = _consume(cfg, plan, table, killed_at, EPOCH_STEPS, world=3)  # ... resumed on 3
    assert before + after == whole
    remaining = (EPOCH_STEPS - killed_at) * 6
    assert consumed == remaining and decoded <= remaining + 3 * 2  # the rest, plus at most a row per worker


def test_clips_per_row_not_dividing_the_global_batch_split_a_row_between_workers(ray_local, corpus, tmp_path):
    """5 clips per step of 2-clip rows: a row straddles two slices, both decode it, each keeps its own."""
    cfg = _cfg(corpus, tmp_path)
    cfg.optim.effective_batch = 5
    rows = load_manifest(corpus).rows
    plan = make_plan(cfg, len(rows) * 2, ["a"], num_rows=len(rows))
    table = ray.put(manifest_table(rows))
    whole, decoded, consumed = _consume(cfg, plan, table, 0, plan.total_steps, world=2)
    assert set(whole.values()) == {1} and consumed == plan.total_steps * 5
    assert consumed < decoded <= consumed + plan.total_steps * 2  # one row more per step at most


def test_a_resumed_worker_starts_at_the_recorded_position_and_says_when_the_config_cut_it_otherwise(corpus, tmp_path):
    from pipeline.train.stream import start_position

    cfg = _cfg(corpus, tmp_path)
    plan = make_plan(cfg, 40, ["a"], num_rows=20)
    here, warning, accum = start_position(plan, 4, position(4, layout_of(plan)), streaming=True, rank=0, world=2,
                                          batch_size=2)
    assert (here["epoch"], here["clips_consumed"], warning, accum) == (0, 24, None, 2)  # 2 rows = 4 clips: 2 micro
    _, warning, accum = start_position(plan, 4, position(4, layout_of(plan)), streaming=True, rank=2, world=3,
                                       batch_size=2)
    assert (warning, accum) == (None, 1)
    other = {**position(4, layout_of(plan)), "clips_consumed": 12}  # a checkpoint of another global batch
    _, warning, _ = start_position(plan, 4, other, streaming=True, rank=0, world=2, batch_size=2)
    assert "data position" in warning and "step 4" in warning
    assert start_position(plan, 4, None, streaming=False, rank=0, world=2, batch_size=2) == (None, None, plan.accum)
