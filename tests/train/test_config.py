"""The job config: shipped configs validate, bad keys / types / URIs fail fast naming the key, before Ray starts."""

from __future__ import annotations

import os

import pytest

from jobs import train as job
from pipeline.config import load_config
from pipeline.train.config import TrainJobConfig, validate

CONFIGS = sorted(f for f in os.listdir("configs") if f.endswith(".yaml"))


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


@pytest.mark.parametrize("override, text", [
    ("model.preset=nosuch", "model.preset: unknown preset 'nosuch'"),
    ("model.overrides.nosuch=1", "model.overrides: unknown config key nosuch"),
    ("model.overrides.depth=-1", "depth"),
    ("optim.lr=.nan", "optim.lr: must be a finite number"),
    ("optim.momentum=.inf", "optim.momentum: must be a finite number"),
    ("data.crop_size=30", "not divisible by patch_size 8"),  # the debug preset's patch is 8
])
def test_model_and_number_errors_fail_on_the_driver(user_error, override, text):
    user_error(job.main, ["--config", "configs/debug.yaml", "--set", "train_manifest=t.csv",
                          "--set", "val_manifest=v.csv", "--set", override], text)


def test_missing_manifests_fail_before_ray(user_error, tmp_path):
    user_error(job.main, ["--config", "configs/debug.yaml", "--set", f"train_manifest={tmp_path}/t.csv",
                          "--set", f"val_manifest={tmp_path}/v.csv"], "train_manifest:")
    (tmp_path / "t.csv").write_text("path,label\na.mp4,x\n")
    user_error(job.main, ["--config", "configs/debug.yaml", "--set", f"train_manifest={tmp_path}/t.csv",
                          "--set", f"val_manifest={tmp_path}/v.csv"], "val_manifest:")


def test_compile_is_opt_in_by_flag_or_key():
    from pipeline.cli import parse_job

    assert TrainJobConfig().model.compile is False
    for argv in (["--model.compile"], ["--set", "model.compile=true"]):
        cfg, _ = parse_job(TrainJobConfig, argv, prog="train", doc="")
        assert cfg.model.compile is True


def test_elastic_workers_parse_from_the_command_line_and_pass_to_ray_trains_scaling_config():
    from pipeline.cli import parse_job
    from pipeline.train.driver import scaling_config

    cfg, _ = parse_job(TrainJobConfig, ["--config", "configs/debug.yaml", "--set", "scale.num_workers=[2,16]",
                                        "--set", "scale.resize_interval_s=30"], prog="train", doc="")
    validate(cfg)
    sc = scaling_config(cfg)
    assert sc.num_workers == (2, 16) and sc.elasticity_enabled and sc.elastic_resize_monitor_interval_s == 30
    assert (sc.min_workers, sc.max_workers) == (2, 16)
    cfg.scale.num_workers = 4
    assert scaling_config(cfg).num_workers == 4 and not scaling_config(cfg).elasticity_enabled


@pytest.mark.parametrize("override, text", [
    ("scale.num_workers=[0,2]", "scale.num_workers: [min, max] needs 1 <= min <= max"),
    ("scale.num_workers=[3,2]", "scale.num_workers: [min, max] needs 1 <= min <= max"),
    ("scale.num_workers=[1,2,3]", "scale.num_workers: expected a number or [min, max]"),
    ("scale.resize_interval_s=-1", "scale.resize_interval_s"),
    ("optim.effective_batch=3", "optim.effective_batch: 3 clips per step cannot feed 4 workers"),
])
def test_bad_elastic_settings_fail_on_the_driver(user_error, override, text):
    user_error(job.main, ["--config", "configs/debug.yaml", "--set", "train_manifest=t.csv",
                          "--set", "val_manifest=v.csv", "--set", "scale.num_workers=[1,4]", "--set", override], text)
