"""Ray Train V2: DDP training of a video transformer that streams clips from Ray Data.

    cfg = load_config(TrainJobConfig, "configs/debug.yaml", ["optim.lr=0.01"])
    result = fit(cfg)            # TorchTrainer(train_func, ...).fit()

Layout of a run (`<run.storage_path>/<run.name>/`, local or `s3://`):
    checkpoint_<step>/   Ray Train checkpoints: state.pt (model, optimizer, schedule position,
                         step, epoch, the data position, clips decoded / consumed) and
                         rng_<rank>.pt (each worker's RNG streams); keep K
    metrics.jsonl        one JSON record per logged step / evaluation / (re)start
    metrics.png          loss, accuracy and lr curves, drawn at the end
    model.pt             the final model in `pipeline.model` format (for `jobs.infer`)
    labels.json, summary.json (config, plan; at the end clips decoded and consumed), errors/
    clips/               with loop.record_clips: the clips each step consumed (`audit`)

Resume: running the same config again (same `run.name` + `run.storage_path`) continues from the
latest checkpoint; `FailureConfig(max_failures)` restarts a failed worker group the same way, and
an elastic group (`scale.num_workers: [min, max]`) restarts at the size the cluster holds. The
data position belongs to the run (`pipeline.data.position`): each epoch's clip order is fixed by
(seed, epoch), step t consumes its clips [t * global_batch, (t + 1) * global_batch), and each
worker streams only its slice of the steps still to come, so a resumed run, at any world size,
decodes nothing it consumed and each epoch uses each clip once.

Modules (`loop`, `stream` and `driver` import Ray Train; `from pipeline.train import fit` loads them on use):
    config      the job's config sections and `validate`
    batch       the global batch, its split over the workers, lr scaling (no config types)
    schedule    lr_at, the Plan the driver fixes, the data layout, log/eval/checkpoint rules
    losses      soft targets (label smoothing), mixup
    build       model (fresh or from model.init weights) and optimizer
    checkpoint  RNG streams, training state, checkpoint folders, restore
    metrics     metrics.jsonl and the running Window between logged steps
    recipe      --eval-only: the data settings resolved against the checkpoint's recipe (eval_plan)
    audit       which clips each step consumed (loop.record_clips)
    stream      a worker's train stream from the data position (StepStream, TrainData)
    loop        the Ray Train worker: train_func, train_step, evaluate_clips, Reporter
    driver      fit, make_trainer, scaling_config, build_datasets, load_splits, evaluate_run (--eval-only)
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.train.build import build_model, build_optimizer, load_init_weights, set_lr
from pipeline.train.checkpoint import (
    latest_checkpoint_step, load_checkpoint_dir, restore, rng_state, save_checkpoint_dir, seed_worker,
    set_rng_state, training_state,
)
from pipeline.train.config import (
    EvalSection, InitSection, LoopSection, ModelSection, OptimSection, RunSection, ScaleSection, TrainJobConfig,
    validate,
)
from pipeline.train.losses import mixup, sample_mixup, soft_cross_entropy, soft_targets
from pipeline.train.metrics import Window, peak_memory_mb, read_metrics, write_metrics
from pipeline.train.schedule import (
    Plan, accumulation_steps, lr_at, make_plan, resume_skip, run_dir_of, schedule_of, scaled_lr,
    should_checkpoint, should_eval, should_log, steps_per_epoch,
)

_RAY_MODULES = {
    "train_func": "loop", "train_step": "loop", "evaluate_clips": "loop", "Reporter": "loop",
    "fit": "driver", "make_trainer": "driver", "scaling_config": "driver", "build_datasets": "driver", "load_splits": "driver",
    "evaluate_run": "driver", "ray_storage": "driver",
}


def __getattr__(name: str) -> Any:
    """The names of the Ray modules (`loop`, `driver`), imported on first use."""
    if name in _RAY_MODULES:
        return getattr(importlib.import_module(f"pipeline.train.{_RAY_MODULES[name]}"), name)
    raise AttributeError(f"module 'pipeline.train' has no attribute {name!r}")


__all__ = [
    "EvalSection", "InitSection", "LoopSection", "ModelSection", "OptimSection", "RunSection", "ScaleSection",
    "TrainJobConfig", "validate", "Plan", "accumulation_steps", "lr_at", "make_plan", "resume_skip", "run_dir_of",
    "schedule_of", "scaled_lr", "should_checkpoint", "should_eval", "should_log", "steps_per_epoch", "mixup",
    "sample_mixup", "soft_cross_entropy", "soft_targets", "build_model", "build_optimizer", "load_init_weights",
    "set_lr", "latest_checkpoint_step", "load_checkpoint_dir", "restore", "rng_state", "save_checkpoint_dir",
    "seed_worker", "set_rng_state", "training_state", "Window", "peak_memory_mb", "read_metrics", "write_metrics",
    *_RAY_MODULES,
]
