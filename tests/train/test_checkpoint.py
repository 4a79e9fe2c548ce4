"""Checkpoint state: exact restore of training, checkpoint folders of a run (pipeline.train.checkpoint)."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.train.build import build_model, build_optimizer
from pipeline.train.checkpoint import (
    latest_checkpoint_step, load_checkpoint_dir, orphan_steps, remove_orphan_checkpoints, rng_state,
    save_checkpoint_dir, set_rng_state, training_state,
)
from pipeline.train.config import ModelSection, OptimSection
from pipeline.train.losses import mixup, sample_mixup, soft_cross_entropy, soft_targets


def test_checkpoint_state_roundtrip_restores_training_exactly(tmp_path):
    """Save after 2 steps, restore into fresh objects, take the same 3rd step: identical weights."""
    def fresh():
        torch.manual_seed(0)
        m = build_model(ModelSection("debug", {"num_frames": 4}), num_classes=4)
        return m, build_optimizer(m, OptimSection(name="adamw"), lr=1e-3)

    def step(m, opt, rng):
        x = torch.randn(2, 3, 4, 32, 32)
        lam, perm = sample_mixup(0.4, 2, rng)
        xm, ym = mixup(x, soft_targets(torch.tensor([1, 3]), 4), lam, perm)
        soft_cross_entropy(m(xm), ym).backward()
        opt.step()
        opt.zero_grad()

    m, opt = fresh()
    rng = np.random.default_rng(1)
    for _ in range(2):
        step(m, opt, rng)
    save_checkpoint_dir(str(tmp_path), 0, training_state(m, opt, step=2, epoch=0, schedule={}), rng_state(rng))
    step(m, opt, rng)
    expected = {k: v.clone() for k, v in m.state_dict().items()}

    m2, opt2 = fresh()
    rng2 = np.random.default_rng(99)
    state, rngs = load_checkpoint_dir(str(tmp_path), 0)  # weights_only=True inside
    m2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optimizer"])
    set_rng_state(rngs, rng2)
    assert state["step"] == 2
    step(m2, opt2, rng2)
    for k, v in m2.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_latest_checkpoint_step_reads_step_numbered_folders(tmp_path):
    assert latest_checkpoint_step(str(tmp_path / "missing")) is None
    for name in ("checkpoint_00000004", "checkpoint_00000012", "checkpoint_tmp", "metrics.jsonl"):
        (tmp_path / name).mkdir()
    assert latest_checkpoint_step(str(tmp_path)) == 12


def test_orphan_steps_are_the_ones_below_those_ray_train_keeps():
    assert orphan_steps([4, 14, 15], kept=[14, 15]) == [4]
    assert orphan_steps([14, 15], kept=[14, 15]) == []
    assert orphan_steps([4, 8], kept=[]) == []  # nothing kept (no checkpoint reported): nothing is an orphan
    assert orphan_steps([4, 8, 20], kept=[8]) == [4]  # a newer folder than the kept ones is not touched


def test_a_checkpoint_left_by_a_killed_driver_is_removed_and_nothing_else(tmp_path):
    for step in (4, 14, 15):
        (tmp_path / f"checkpoint_{step:08d}").mkdir()
        (tmp_path / f"checkpoint_{step:08d}" / "state.pt").write_bytes(b"x")
    (tmp_path / "checkpoint_00000002").mkdir()  # not a checkpoint of ours: no state.pt
    (tmp_path / "checkpoint_00000002" / "notes.txt").write_text("mine")
    (tmp_path / "model.pt").write_bytes(b"m")
    removed = remove_orphan_checkpoints(str(tmp_path), ["checkpoint_00000014", "checkpoint_00000015"])
    assert removed == ["checkpoint_00000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_00000002", "checkpoint_00000014", "checkpoint_00000015", "model.pt"]
