"""Fast tests of the training helpers and the job's config handling (no Ray Train run)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from jobs import train as job
from pipeline.config import ConfigError, from_dict, load_config
from pipeline.train import (
    OptimSection, TrainJobConfig, accumulation_steps, build_model, build_optimizer, lr_at, make_plan,
    mixup, read_metrics, resume_skip, sample_mixup, scaled_lr, soft_cross_entropy, soft_targets,
    steps_per_epoch, training_state, load_checkpoint_dir, save_checkpoint_dir, rng_state, set_rng_state,
    validate, write_metrics, ModelSection, plot_metrics,
)

CONFIGS = sorted(f for f in os.listdir("configs") if f.endswith(".yaml"))


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


# ----------------------------------------------------------------------------- losses, mixup


def test_label_smoothing_targets_and_loss():
    t = soft_targets(torch.tensor([0, 2]), 4, smoothing=0.1)
    assert t.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert t[0].tolist() == pytest.approx([0.925, 0.025, 0.025, 0.025])
    logits = torch.randn(2, 4)
    hard = soft_cross_entropy(logits, soft_targets(torch.tensor([0, 2]), 4))
    assert hard.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).item(), rel=1e-5)


def test_mixup_mixes_inputs_and_targets_with_the_same_weights():
    x = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1, 1).expand(3, 3, 2, 2, 2).clone()
    y = soft_targets(torch.tensor([0, 1, 2]), 3)
    perm = torch.tensor([2, 0, 1])
    xm, ym = mixup(x, y, 0.75, perm)
    assert xm[0].flatten()[0].item() == pytest.approx(0.75 * 0 + 0.25 * 2)
    assert ym[0].tolist() == pytest.approx([0.75, 0.0, 0.25])
    assert ym.sum(1).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_sample_mixup_is_reproducible_from_the_generator():
    a = sample_mixup(0.4, 8, np.random.default_rng(3))
    b = sample_mixup(0.4, 8, np.random.default_rng(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert 0.0 <= a[0] <= 1.0 and sorted(a[1].tolist()) == list(range(8))


# ----------------------------------------------------------------------------- model, optimizer, state


def test_optimizer_skips_weight_decay_on_norms_biases_and_embeddings():
    model = build_model(ModelSection("debug", {"num_frames": 4}), num_classes=4)
    opt = build_optimizer(model, OptimSection(name="sgd", weight_decay=1e-4), lr=0.1)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} >= {"cls_token", "pos_embed", "time_embed", "norm.weight"}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert build_model(ModelSection("debug", {"num_frames": 4}), num_classes=7).head.out_features == 7


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


def test_metrics_jsonl_roundtrip_and_plot(tmp_path):
    records = [{"kind": "train", "step": s, "loss": 1.0 / s, "acc": 0.1 * s, "lr": 0.01} for s in range(1, 4)]
    records.append({"kind": "val", "step": 3, "val_loss": 0.5, "val_acc": 0.7})
    write_metrics(str(tmp_path), records)
    assert read_metrics(str(tmp_path)) == records
    plot_metrics(records, str(tmp_path / "metrics.png"))
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_load(name):
    cfg = load_config(TrainJobConfig, f"configs/{name}")
    validate(cfg)


def test_unknown_key_fails_fast_naming_it(capsys):
    assert job.main(["--config", "configs/debug.yaml", "--set", "optim.learning_rate=0.1"]) == 2
    err = capsys.readouterr().err
    assert "optim.learning_rate" in err and "unknown" in err


def test_bad_type_fails_fast_naming_the_key(capsys):
    assert job.main(["--config", "configs/debug.yaml", "--set", "loop.epochs=many"]) == 2
    assert "loop.epochs" in capsys.readouterr().err


def test_missing_dataset_uri_fails_fast(capsys, tmp_path):
    (tmp_path / "c.yaml").write_text("val_manifest: v.csv\n")
    assert job.main(["--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "train_manifest" in err and "missing" in err


def test_config_errors_do_not_start_ray(capsys):
    import ray

    was = ray.is_initialized()
    assert job.main(["--config", "configs/debug.yaml", "--set", "scale.num_workers=0"]) == 2
    assert "scale.num_workers" in capsys.readouterr().err
    assert ray.is_initialized() == was


# ----------------------------------------------------------------------------- storage for Ray Train


def test_ray_storage_local_and_s3(tmp_path, s3_server):
    import pyarrow.fs as pafs

    from pipeline.train import ray_storage

    path, fs = ray_storage(str(tmp_path / "runs"))
    assert path == str(tmp_path / "runs") and fs is None
    path, fs = ray_storage("s3://bucket/runs")
    assert path == "bucket/runs" and isinstance(fs, pafs.S3FileSystem)


def test_latest_checkpoint_step_reads_step_numbered_folders(tmp_path):
    from pipeline.train import latest_checkpoint_step

    assert latest_checkpoint_step(str(tmp_path / "missing")) is None
    for name in ("checkpoint_00000004", "checkpoint_00000012", "checkpoint_tmp", "metrics.jsonl"):
        (tmp_path / name).mkdir()
    assert latest_checkpoint_step(str(tmp_path)) == 12


def test_howto100m_task_csvs_load_through_the_template(tmp_path):
    from pipeline.config import from_dict
    from pipeline.train import TrainJobConfig, load_splits

    (tmp_path / "train.csv").write_text("vid_a,101\nvid_b,205\nvid_c,101\n")
    (tmp_path / "test.csv").write_text("vid_d,205\n")
    cfg = from_dict(TrainJobConfig, {"train_manifest": str(tmp_path / "train.csv"),
                                     "val_manifest": str(tmp_path / "test.csv"),
                                     "howto100m_template": "s3://bucket/howto100m/{video_id}.mp4"})
    train, val = load_splits(cfg)
    assert [r["path"] for r in train.rows] == [f"s3://bucket/howto100m/vid_{c}.mp4" for c in "abc"]
    assert train.rows[0]["label"] == train.rows[2]["label"] != train.rows[1]["label"]
    assert val.rows[0]["label"] == train.rows[1]["label"]  # one label map for both splits
