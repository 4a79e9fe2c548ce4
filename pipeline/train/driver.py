"""The training driver: manifests -> Ray Datasets -> plan -> `TorchTrainer(train_func).fit()`,
and the `--eval-only` video-level evaluation of a trained model.

    result = fit(cfg)                # train, or resume the run of cfg.run
    result = evaluate_run(cfg)       # eval.json in the run folder
"""

from __future__ import annotations

from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline import storage
from pipeline.config import ConfigError, to_dict
from pipeline.data.dataset import build_clip_dataset
from pipeline.data.rows import manifest_table
from pipeline.data.errors import write_errors
from pipeline.data.manifest import load_manifest
from pipeline.model.recipe import CLIP_FIELDS
from pipeline.train.checkpoint import remove_orphan_checkpoints
from pipeline.train.config import TrainJobConfig, validate
from pipeline.train.loop import train_func
from pipeline.train.recipe import EvalPlan, eval_plan
from pipeline.train.schedule import Plan, make_plan, run_dir_of, world_range


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


def build_datasets(cfg: TrainJobConfig, val_rows: list[dict]) -> dict[str, Any]:
    """Ray Datasets for TorchTrainer: `val`, the centre clips (`frames`, `label`). The train clips
    do not go through Ray Train's split: each worker streams its own slice of every step from the
    run's data position (`pipeline.train.stream`), which a shared split cannot seek to."""
    run_dir = run_dir_of(cfg.run)
    val = build_clip_dataset(val_rows, cfg.data, mode="val", seed=cfg.loop.seed,
                             error_uri=storage.join(run_dir, "errors"), materialize=cfg.loop.cache_val)
    return {"val": val.select_columns(["frames", "label"])}


def ray_storage(storage_path: str) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for RunConfig: absolute local path, or for object
    stores the bucket path plus a pyarrow filesystem that knows the endpoint (S3-compatible)."""
    if storage.is_local(storage_path):
        return storage.local_path(storage_path), None
    fs, path = storage.arrow_filesystem(storage_path)
    return path, fs


def scaling_config(cfg: TrainJobConfig) -> ScalingConfig:
    """Ray Train's ScalingConfig: a fixed group, or an elastic one for `scale.num_workers: [min, max]`."""
    lo, hi = world_range(cfg.scale.num_workers)
    return ScalingConfig(num_workers=hi if lo == hi else (lo, hi), use_gpu=cfg.scale.use_gpu,
                         resources_per_worker=dict(cfg.scale.resources_per_worker) or None,
                         elastic_resize_monitor_interval_s=cfg.scale.resize_interval_s)


def make_trainer(cfg: TrainJobConfig, plan: Plan, datasets: dict[str, Any], train_table: Any = None):
    """The TorchTrainer of this job; `train_table`: the object ref of the train split's manifest
    table (the workers' streams read it), None when `datasets` holds the train clips."""
    path, fs = ray_storage(cfg.run.storage_path)
    loop_config = {"job": to_dict(cfg), "plan": to_dict(plan)}
    if train_table is not None:
        loop_config["train_table"] = [train_table]  # in a list: handed over as a ref, not resolved
    return TorchTrainer(
        train_func,
        train_loop_config=loop_config,
        scaling_config=scaling_config(cfg),
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
    Such a stream has no row order to seek in: a resume pulls the consumed micro-batches through
    it again (`schedule.resume_skip`), and the world size must be fixed.
    """
    validate(cfg, need_train=datasets is None)
    run_dir = run_dir_of(cfg.run)
    table = None
    if datasets is None:
        train, val = load_splits(cfg)
        labels = list(train.labels.names)
        plan = make_plan(cfg, len(train.rows) * cfg.data.clips_per_video, labels, num_rows=len(train.rows))
        datasets = build_datasets(cfg, val.rows)
        table = ray.put(manifest_table(train.rows))  # once; every worker's stream reads its rows from it
        manifest_errors = train.errors + val.errors
        if manifest_errors:
            write_errors(storage.join(run_dir, "errors"), manifest_errors)
    else:
        if num_train_clips is None or labels is None:
            raise ValueError("fit(datasets=...) needs num_train_clips and labels")
        if world_range(cfg.scale.num_workers)[0] != world_range(cfg.scale.num_workers)[1]:
            raise ConfigError("scale.num_workers: a range needs the manifests (a given train dataset has no row "
                              "order to resume from at another world size)")
        plan = make_plan(cfg, num_train_clips, labels)
    storage.write_json(storage.join(run_dir, "labels.json"),
                       {"names": plan.labels, "name_to_id": {n: i for i, n in enumerate(plan.labels)}})
    storage.write_json(storage.join(run_dir, "summary.json"), {"config": to_dict(cfg), "plan": to_dict(plan)})
    print(f"[train] run {run_dir}: {plan.num_train_clips} clips/epoch, {plan.steps_per_epoch} steps/epoch, "
          f"{plan.total_steps} steps, global batch {plan.effective_batch}, lr {plan.base_lr:g}", flush=True)
    result = make_trainer(cfg, plan, datasets, table).fit()
    kept = [c.path for c, _ in result.best_checkpoints or []]
    removed = remove_orphan_checkpoints(run_dir, kept)
    if removed:
        print(f"[train] removed {', '.join(removed)}: older than the {len(kept)} checkpoints kept "
              "(loop.keep_checkpoints), left by an earlier driver that ended before deleting them", flush=True)
    return result


def evaluate_run(cfg: TrainJobConfig, plan: EvalPlan | None = None) -> dict[str, Any]:
    """`--eval-only`: video-level multi-view evaluation of a trained model on `val_manifest`.

    Views: `data.clips` temporal clips x `data.crops` crops per video (set `data.crops=3` for the
    official 1 x 3 protocol), classified on the inference path (`pipeline.infer.evaluation`: decode
    tasks and a model actor pool, on GPU nodes when the cluster has or can add them; `eval.device`
    cpu keeps the model on CPUs). The clip settings are `plan`'s (`pipeline.train.recipe.eval_plan`:
    the checkpoint's recipe under the data fields the user set). Writes `eval.json` (and the rows,
    `eval/predictions.parquet`) to the run folder and returns it.
    """
    from pipeline.infer.evaluation import evaluate_videos

    validate(cfg, need_train=False)
    plan = plan or eval_plan(cfg)
    run_dir = run_dir_of(cfg.run)
    labels_uri = storage.join(run_dir, "labels.json")
    clip_values = {k: getattr(plan.data, k) for k in CLIP_FIELDS}
    result = evaluate_videos(plan.checkpoint, cfg.val_manifest, storage.join(run_dir, "eval"), clip_values,
                             batch_size=cfg.eval.batch_size, device=cfg.eval.device,
                             labels=labels_uri if storage.exists(labels_uri) else (cfg.labels or None),
                             howto100m_template=cfg.howto100m_template or None)
    result.update({"checkpoint": plan.checkpoint, "manifest": cfg.val_manifest, "clips_per_video": plan.data.clips,
                   "crops": plan.data.crops, "recipe": plan.record})
    storage.write_json(storage.join(run_dir, "eval.json"), result)
    return result
