"""The clip recipe a trained checkpoint carries, end to end at the clip level: `model.pt` written
by the training code (Reporter.finish) under configs/debug.yaml, inferred with no clip flags, gives
the clips validation made; --eval-only resolves the same way; a bad frame count stops the job
before Ray starts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pipeline import storage
from pipeline.config import ConfigError, load_config
from pipeline.data import synthetic
from pipeline.data.clips import read_clips
from pipeline.data.decode import Video
from pipeline.data.manifest import load_manifest
from pipeline.infer import ClipOverrides, InferConfig, clip_config, plan_inference, read_video
from pipeline.train import TrainJobConfig, make_plan, run_dir_of
from pipeline.train.recipe import eval_plan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEBUG = os.path.join(ROOT, "configs", "debug.yaml")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A corpus, the debug config pointing at it, and model.pt written by `Reporter.finish`."""
    import torch

    from pipeline.train.build import build_model, build_optimizer
    from pipeline.train.loop import Reporter
    from pipeline.train.schedule import schedule_of

    root = tmp_path_factory.mktemp("run")
    corpus = synthetic.make_corpus(str(root / "corpus"), videos=8, seconds=3.0, seed=3)
    folder = os.path.dirname(corpus)
    cfg = load_config(TrainJobConfig, DEBUG, [f"train_manifest={folder}/train.csv", f"val_manifest={folder}/val.csv",
                                              f"run.storage_path={root / 'runs'}"])
    plan = make_plan(cfg, 64, list(synthetic.CLASSES))
    torch.manual_seed(0)
    model = build_model(cfg.model, plan.num_classes)
    reporter = Reporter(model, build_optimizer(model, cfg.optim, plan.base_lr), np.random.default_rng(0),
                        schedule_of(cfg, plan), plan, rank=0)
    reporter.finish(7, cfg.data)
    return cfg, storage.join(run_dir_of(cfg.run), "model.pt")


def test_inference_with_the_recipes_protocol_makes_the_clips_validation_made(trained_run):
    """With no clip flags the model sees the recipe's clips; with the recipe's protocol
    (`clip.sampling=None`, as --eval-only) it sees exactly what validation decoded. Without it, a long
    video is covered (the job's default), with the recipe's frames, rate and crop, and no warning."""
    cfg, ckpt = trained_run
    plan = plan_inference(ckpt, InferConfig())
    assert not plan.warnings and plan.recipe["labels"] == list(synthetic.CLASSES)
    assert plan.resolved.values["sampling"] == "cover"
    assert (plan.recipe["num_frames"], plan.recipe["sampling_rate"], plan.recipe["crop_size"]) == (8, 4, 32)
    plan = plan_inference(ckpt, InferConfig(clip=ClipOverrides(sampling=None)))
    assert not plan.warnings
    spec = clip_config(InferConfig(), plan.resolved.values)
    legacy = clip_config(InferConfig(), {**plan.resolved.values, "sampling_rate": 32, "sampling": "cover"})
    val = load_manifest(cfg.val_manifest)
    assert val.rows
    for row in val.rows:
        with storage.open_for_reading(row["path"]) as src, Video(src) as video:
            ref = read_clips(video, row, cfg.data, mode="val")  # what validation decodes
        meta, frames = read_video({"uri": row["path"], "video_id": row["video_id"]}, spec)
        assert meta["starts"] == ref.starts and meta["ends"] == ref.ends
        np.testing.assert_array_equal(frames, ref.frames)
        old_meta, _ = read_video({"uri": row["path"], "video_id": row["video_id"]}, legacy)
        assert old_meta["ends"] != ref.ends  # the pre-recipe defaults (rate 32, cover) do differ


def test_eval_only_resolves_the_data_fields_the_user_did_not_set(trained_run):
    cfg, ckpt = trained_run
    import dataclasses

    bare = dataclasses.replace(cfg, data=type(cfg.data)())  # no data section: 8 x 32 at 224 by default
    plan = eval_plan(bare, data_keys=set())
    assert (plan.data.num_frames, plan.data.sampling_rate, plan.data.crop_size, plan.data.short_side) == (8, 4, 32, 32)
    assert not plan.warnings
    three = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, crops=3))
    plan = eval_plan(three, data_keys={"data.crops"})
    assert plan.data.crops == 3 and plan.record["overrides"] == {"crops": {"recipe": 1, "used": 3}}
    assert plan.warnings == ["--data.crops 3 (given) differs from the checkpoint's recipe (1); using 3"]
    sixteen = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_frames=16))
    with pytest.raises(ConfigError, match="--data.num-frames 16: the model takes 8 frames .*--eval.allow-resample"):
        eval_plan(sixteen, data_keys={"data.num_frames"})


def test_jobs_stop_on_a_bad_frame_count_before_ray_starts(trained_run, tmp_path, capsys):
    import ray

    from jobs.infer import main as infer_main
    from jobs.train import main as train_main

    cfg, ckpt = trained_run
    had_ray = ray.is_initialized()  # False when this file runs alone: then no job may start it
    rc = infer_main(["--checkpoint", ckpt, "--videos", cfg.val_manifest, "--output", str(tmp_path / "out"),
                     "--clip.num-frames", "16"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--clip.num-frames 16: the model takes 8 frames" in err
    rc = infer_main(["--checkpoint", str(tmp_path / "missing.pt"), "--videos", cfg.val_manifest,
                     "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: --checkpoint {tmp_path / 'missing.pt'}: not found\n"
    rc = train_main(["--config", DEBUG, "--eval-only", "--set", f"val_manifest={cfg.val_manifest}",
                     "--set", f"eval.checkpoint={ckpt}", "--data.num-frames", "16"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("config error: --data.num-frames 16") and err.count("\n") == 1
    assert ray.is_initialized() == had_ray and not (tmp_path / "out").exists()


def test_the_checkpoint_meta_is_plain_data(trained_run):
    import torch

    _, ckpt = trained_run
    meta = torch.load(ckpt, weights_only=True)["meta"]
    assert json.loads(json.dumps(meta["recipe"])) == meta["recipe"]
    assert meta["recipe"]["mean"] == [0.45] * 3 and meta["step"] == 7
