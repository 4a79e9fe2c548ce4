"""TensorBoard event files and MLflow runs of a training run, read back with the libraries' own readers."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, from_dict
from pipeline.train.config import RunSection, TrainJobConfig, validate
from pipeline.train.trackers import Trackers, flat_params, scalars

TRAIN = {"kind": "train", "step": 10, "epoch": 0.5, "loss": 1.25, "acc": 0.5, "lr": 0.01, "time": 1.7e9}
VAL = {"kind": "val", "step": 20, "epoch": 1, "val_loss": 0.75, "val_acc": 0.875, "val_clips": 16, "time": 1.7e9}


def test_records_become_scalars_and_configs_params():
    assert scalars(TRAIN) == {"train/loss": 1.25, "train/acc": 0.5, "train/lr": 0.01}
    assert scalars(VAL) == {"val/loss": 0.75, "val/acc": 0.875, "val/clips": 16.0}
    assert scalars({"kind": "train", "step": 1, "loss": float("nan"), "flag": True}) == {}
    assert flat_params({"optim": {"lr": 0.005, "milestones": [11, 14]}, "labels": ""}) == {
        "optim.lr": "0.005", "optim.milestones": "[11, 14]", "labels": ""}


def _accumulate(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return acc


def test_tensorboard_and_mlflow_record_every_metric_and_a_resume_continues_the_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's local file store (no server, no database)
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    uri = f"file:{tmp_path / 'mlruns'}"
    section = RunSection(name="r1", storage_path=str(tmp_path / "runs"), tensorboard=True, mlflow_uri=uri)
    first = Trackers.open(section, str(run_dir), config={"optim": {"lr": 0.005}})
    first.log(TRAIN)
    first.log({**TRAIN, "step": 30, "loss": 9.0})  # logged, then lost to a crash before a checkpoint
    first.log(VAL)
    first.close()
    resumed = Trackers.open(section, str(run_dir), config={"optim": {"lr": 0.005}}, start_step=20)
    resumed.log({**TRAIN, "step": 30, "loss": 0.5})
    resumed.close()

    acc = _accumulate(run_dir / "tensorboard")
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(10, 1.25), (30, 0.5)]  # 30 purged, re-logged
    assert [(e.step, e.value) for e in acc.Scalars("val/acc")] == [(20, 0.875)]
    client = MlflowClient(tracking_uri=uri)
    assert first.mlflow_run == resumed.mlflow_run  # one run across the restart
    run = client.get_run(first.mlflow_run)
    assert run.data.params["optim.lr"] == "0.005" and run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert [(m.step, m.value) for m in client.get_metric_history(first.mlflow_run, "val_acc")] == [(20, 0.875)]
    assert {m.step for m in client.get_metric_history(first.mlflow_run, "train_loss")} == {10, 30}


def test_trackers_are_off_by_default_and_tensorboard_needs_a_local_folder():
    off = Trackers.open(RunSection(), "runs/x", config={})
    assert off.tensorboard is None and off.mlflow is None
    cfg = from_dict(TrainJobConfig, {"train_manifest": "t.csv", "val_manifest": "v.csv",
                                     "run": {"storage_path": "s3://b/runs", "tensorboard": True}})
    with pytest.raises(ConfigError, match="run.tensorboard_dir"):
        validate(cfg)
    cfg.run.tensorboard_dir = "/tmp/tb"
    validate(cfg)
