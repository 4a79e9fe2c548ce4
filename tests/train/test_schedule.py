"""Batch arithmetic, the lr schedule, the plan and the loop rules (pipeline.train.schedule)."""

from __future__ import annotations

import math

import pytest

from pipeline.config import ConfigError, from_dict, to_dict
from pipeline.train import TrainJobConfig
from pipeline.train.schedule import (
    accumulation_steps, lr_at, make_plan, resume_skip, scaled_lr, should_checkpoint, should_eval, should_log,
    steps_per_epoch,
)


# ----------------------------------------------------------------------------- lr schedule


def test_step_schedule_drops_by_gamma_at_each_milestone():
    lrs = [lr_at(s, base_lr=0.1, total_steps=30, schedule="step", milestones=[10, 20], gamma=0.1) for s in range(30)]
    assert lrs[0] == lrs[9] == 0.1
    assert lrs[10] == pytest.approx(0.01) and lrs[19] == pytest.approx(0.01)
    assert lrs[20] == pytest.approx(0.001) and lrs[29] == pytest.approx(0.001)


def test_warmup_rises_linearly_to_the_peak_then_cosine_decays_to_min_lr():
    kw = dict(base_lr=1.0, total_steps=110, warmup_steps=10, schedule="cosine", min_lr=0.0)
    warm = [lr_at(s, **kw) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.5)  # half way through the cosine
    assert lr_at(109, **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    decay = [lr_at(s, **kw) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_cosine_respects_the_floor():
    assert lr_at(100, base_lr=1.0, total_steps=100, schedule="cosine", min_lr=0.1) == pytest.approx(0.1)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="schedule"):
        lr_at(5, base_lr=1.0, total_steps=10, schedule="linear")


# ----------------------------------------------------------------------------- batch arithmetic


def test_accumulation_reaches_the_effective_batch():
    assert accumulation_steps(None, 8, 2) == 1
    assert accumulation_steps(64, 8, 2) == 4
    assert accumulation_steps(64, 1, 16) == 4  # TimeSformer-L: 1 clip per GPU on 16 GPUs
    for bad in (24, 8):  # not a multiple / below one micro-batch
        with pytest.raises(ConfigError, match="optim.effective_batch"):
            accumulation_steps(bad, 8, 2)


def test_linear_lr_scaling_and_steps_per_epoch():
    assert scaled_lr(0.005, 64, 64) == pytest.approx(0.005)
    assert scaled_lr(0.005, 64, 16) == pytest.approx(0.00125)
    # 100 clips on 2 workers -> 50 each -> 6 micro-batches of 8 -> 3 steps of 2 micro-batches
    assert steps_per_epoch(100, 2, 8, 2) == 3
    assert steps_per_epoch(15, 2, 8, 1) == 0


def test_plan_converts_epochs_to_steps_and_scales_lr():
    cfg = from_dict(TrainJobConfig, {
        "train_manifest": "t.csv", "val_manifest": "v.csv",
        "optim": {"lr": 0.005, "reference_batch": 64, "effective_batch": 32, "warmup_epochs": 0.5,
                  "milestones": [2, 3]},
        "loop": {"epochs": 4, "batch_size": 4}, "scale": {"num_workers": 2}})
    plan = make_plan(cfg, 130, ["a", "b", "c"])
    assert plan.accum == 4 and plan.effective_batch == 32
    assert plan.steps_per_epoch == 65 // 4 // 4 == 4 and plan.total_steps == 16
    assert plan.base_lr == pytest.approx(0.0025)
    assert plan.warmup_steps == 2 and plan.milestones == [8, 12]
    assert plan.num_classes == 3
    # resuming at step 6 skips the 6 x 4 micro-batches an uninterrupted run consumed
    assert resume_skip(6, plan) == 24


def test_plan_rejects_a_corpus_too_small_for_one_step():
    cfg = from_dict(TrainJobConfig, {"loop": {"batch_size": 8}, "scale": {"num_workers": 2}})
    with pytest.raises(ConfigError, match="loop.batch_size"):
        make_plan(cfg, 10, ["a"])


# ----------------------------------------------------------------------------- loop rules


def _plan_and_loop(**loop):
    """3 steps per epoch, 5 epochs = 15 steps."""
    cfg = from_dict(TrainJobConfig, {"loop": {"epochs": 5, "batch_size": 4, **loop}, "scale": {"num_workers": 2}})
    return make_plan(cfg, 24, ["a", "b"]), cfg.loop


def test_eval_at_every_nth_epoch_end_and_at_the_last_step():
    plan, loop = _plan_and_loop(eval_every_epochs=2)
    assert plan.steps_per_epoch == 3 and plan.total_steps == 15
    assert [s for s in range(1, 16) if should_eval(s, plan, loop)] == [6, 12, 15]
    plan, loop = _plan_and_loop(eval_every_epochs=1)
    assert [s for s in range(1, 16) if should_eval(s, plan, loop)] == [3, 6, 9, 12, 15]


def test_log_at_the_interval_and_with_every_evaluation():
    plan, loop = _plan_and_loop(eval_every_epochs=2, log_every_steps=4)
    assert [s for s in range(1, 16) if should_log(s, plan, loop)] == [4, 6, 8, 12, 15]


def test_checkpoint_at_the_interval_and_at_the_last_step():
    plan, loop = _plan_and_loop(checkpoint_every_steps=4)
    assert [s for s in range(1, 16) if should_checkpoint(s, plan, loop)] == [4, 8, 12, 15]
    plan, loop = _plan_and_loop(checkpoint_every_steps=5)
    assert [s for s in range(1, 16) if should_checkpoint(s, plan, loop)] == [5, 10, 15]


def test_an_elastic_plan_keeps_the_global_batch_and_the_steps_at_every_world_size():
    """[2, 16] workers, 1 clip each per micro-batch, 64 clips per step: the steps, the lr and the
    schedule are those of the global batch, whatever the size the group runs at."""
    from pipeline.data.position import worker_clips

    cfg = from_dict(TrainJobConfig, {
        "optim": {"effective_batch": 64, "warmup_epochs": 1, "milestones": [2]}, "loop": {"epochs": 3, "batch_size": 1},
        "scale": {"num_workers": [2, 16]}})
    plan = make_plan(cfg, 1000, ["a"], num_rows=1000)
    assert (plan.effective_batch, plan.steps_per_epoch, plan.total_steps) == (64, 15, 45)
    assert (plan.warmup_steps, plan.milestones, plan.accum) == (15, [30], 4)  # accum at 16 workers
    assert (plan.min_workers, plan.max_workers) == (2, 16)
    fixed = make_plan(from_dict(TrainJobConfig, {**to_dict(cfg), "scale": {"num_workers": 8}}), 1000, ["a"])
    assert (fixed.steps_per_epoch, fixed.base_lr, fixed.accum) == (15, plan.base_lr, 8)
    from pipeline.train.schedule import layout_of

    for world in range(2, 17):  # 6 workers: 11, 11, 11, 11, 10, 10 clips: the step is still 64 clips
        assert sum(worker_clips(layout_of(plan), world)) == 64
    # default global batch: one micro-batch of each of the most workers
    cfg.optim.effective_batch = None
    assert make_plan(cfg, 1000, ["a"]).effective_batch == 16
