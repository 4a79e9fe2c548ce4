"""The training driver: manifests -> Ray Datasets -> plan -> `TorchTrainer(train_func).fit()`,
and the `--eval-only` video-level evaluation of a trained model.

    result = fit(cfg)                # train, or resume the run of cfg.run
    result = evaluate_run(cfg)       # eval.json in the run folder
"""

from __future__ import annotations

import time
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline import model as models
from pipeline import storage
from pipeline.config import ConfigError, to_dict
from pipeline.data.dataset import build_clip_dataset
from pipeline.data.rows import WORK_COLUMNS
from pipeline.data.errors import write_errors
from pipeline.data.manifest import load_manifest
from pipeline.evaluate import evaluate_views
from pipeline.train.checkpoint import latest_checkpoint_step
from pipeline.train.config import TrainJobConfig, validate
from pipeline.train.loop import train_func
from pipeline.train.recipe import EvalPlan, eval_plan
from pipeline.train.schedule import Plan, make_plan, run_dir_of


def load_splits(cfg: TrainJobConfig) -> tuple[Any, Any]:
    """(train Manifest, val Manifest) with one label map (the train one) for both."""
    template = cfg.howto100m_template or None
    train = load_manifest(cfg.train_manifest, labels=cfg.labels or None, howto100m_template=template)
    val = load_manifest(cfg.val_manifest, labels=train.labels, howto100m_template=template)
    if not train.rows:
        raise ConfigError(f"train_manifest: no usable rows in {cfg.train_manifest}")
    if not val.rows:
        raise ConfigError(f"val_manifest: no usable rows in {cfg.val_manifest}")
    return train, val


def build_datasets(cfg: TrainJobConfig, train_rows: list[dict], val_rows: list[dict], *,
                   data_start_epoch: int = 0) -> dict[str, Any]:
    """Ray Datasets for TorchTrainer: `train` streams epochs `data_start_epoch..epochs-1` (new
    clips each), `val` the centre clips; only `frames` and `label` (and, for train, the decode-work
    counters) travel to the workers."""
    run_dir = run_dir_of(cfg.run)
    train = build_clip_dataset(train_rows, cfg.data, mode="train", seed=cfg.loop.seed,
                               error_uri=storage.join(run_dir, "errors"), epoch=data_start_epoch,
                               epochs=max(1, cfg.loop.epochs - data_start_epoch))
    val = build_clip_dataset(val_rows, cfg.data, mode="val", seed=cfg.loop.seed,
                             error_uri=storage.join(run_dir, "errors"), materialize=cfg.loop.cache_val)
    return {"train": train.select_columns(["frames", "label", *WORK_COLUMNS]),
            "val": val.select_columns(["frames", "label"])}


def ray_storage(storage_path: str) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for RunConfig: absolute local path, or for object
    stores the bucket path plus a pyarrow filesystem that knows the endpoint (S3-compatible)."""
    if storage.is_local(storage_path):
        return storage.local_path(storage_path), None
    fs, path = storage.arrow_filesystem(storage_path)
    return path, fs


def make_trainer(cfg: TrainJobConfig, plan: Plan, datasets: dict[str, Any]):
    """The TorchTrainer of this job."""
    path, fs = ray_storage(cfg.run.storage_path)
    return TorchTrainer(
        train_func,
        train_loop_config={"job": to_dict(cfg), "plan": to_dict(plan)},
        scaling_config=ScalingConfig(num_workers=cfg.scale.num_workers, use_gpu=cfg.scale.use_gpu,
                                     resources_per_worker=dict(cfg.scale.resources_per_worker) or None),
        run_config=RunConfig(
            name=cfg.run.name, storage_path=path, storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.loop.keep_checkpoints),
            logging_config=LoggingConfig(log_level="INFO" if cfg.run.ray_train_logs else "WARNING"),
        ),
        datasets=datasets,
    )


def fit(cfg: TrainJobConfig, *, datasets: dict[str, Any] | None = None,
        num_train_clips: int | None = None, labels: list[str] | None = None):
    """Train (or resume) the run of `cfg`; returns Ray Train's `Result`.

    `datasets` (with `num_train_clips` per epoch and `labels`) replaces the ones built from the
    manifests, e.g. a pre-decoded, materialized corpus; its train stream must hold every epoch.
    """
    validate(cfg, need_train=datasets is None)
    run_dir = run_dir_of(cfg.run)
    if datasets is None:
        train, val = load_splits(cfg)
        labels = list(train.labels.names)
        num_train_clips = len(train.rows) * cfg.data.clips_per_video
        probe = make_plan(cfg, num_train_clips, labels)
        last = latest_checkpoint_step(run_dir)
        start_epoch = 0 if last is None else min(last // probe.steps_per_epoch, cfg.loop.epochs - 1)
        datasets = build_datasets(cfg, train.rows, val.rows, data_start_epoch=start_epoch)
        manifest_errors = train.errors + val.errors
        if manifest_errors:
            write_errors(storage.join(run_dir, "errors"), manifest_errors)
    else:
        start_epoch = 0
        if num_train_clips is None or labels is None:
            raise ValueError("fit(datasets=...) needs num_train_clips and labels")
    plan = make_plan(cfg, num_train_clips, labels, data_start_epoch=start_epoch)
    storage.write_json(storage.join(run_dir, "labels.json"),
                       {"names": plan.labels, "name_to_id": {n: i for i, n in enumerate(plan.labels)}})
    storage.write_json(storage.join(run_dir, "summary.json"), {"config": to_dict(cfg), "plan": to_dict(plan)})
    print(f"[train] run {run_dir}: {plan.num_train_clips} clips/epoch, {plan.steps_per_epoch} steps/epoch, "
          f"{plan.total_steps} steps, effective batch {plan.effective_batch}, lr {plan.base_lr:g}", flush=True)
    return make_trainer(cfg, plan, datasets).fit()


def evaluate_run(cfg: TrainJobConfig, plan: EvalPlan | None = None) -> dict[str, Any]:
    """`--eval-only`: video-level multi-view evaluation of a trained model on `val_manifest`.

    Views: `data.clips` temporal clips x `data.crops` crops per video (set
    `data.crops=3` for the official 1 x 3 protocol), decoded by Ray Data, scored on the
    driver (`eval.device`). The clip settings are `plan`'s (`pipeline.train.recipe.eval_plan`:
    the checkpoint's recipe under the data fields the user set; default: every data field set).
    Writes `eval.json` to the run folder and returns it.
    """
    validate(cfg, need_train=False)
    plan = plan or eval_plan(cfg)
    run_dir = run_dir_of(cfg.run)
    ckpt = plan.checkpoint
    labels_uri = storage.join(run_dir, "labels.json")
    val = load_manifest(cfg.val_manifest, labels=labels_uri if storage.exists(labels_uri) else (cfg.labels or None),
                        howto100m_template=cfg.howto100m_template or None)
    model = models.load(ckpt)
    ds = build_clip_dataset(val.rows, plan.data, mode="test", seed=cfg.loop.seed,
                            error_uri=storage.join(run_dir, "eval_errors"))
    ds = ds.select_columns(["frames", "label", "video_id"])
    t0 = time.perf_counter()
    result = evaluate_views(model, ds.iter_batches(batch_size=cfg.eval.batch_size, batch_format="numpy"),
                            device=cfg.eval.device)
    result.update({"checkpoint": ckpt, "manifest": cfg.val_manifest, "clips_per_video": plan.data.clips,
                   "crops": plan.data.crops, "seconds": time.perf_counter() - t0,
                   "manifest_errors": len(val.errors), "recipe": plan.record})
    storage.write_json(storage.join(run_dir, "eval.json"), result)
    return result
