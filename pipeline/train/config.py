"""The training job's configuration: one dataclass per section, and the checks the schema cannot express.

    cfg = load_config(TrainJobConfig, "configs/debug.yaml", ["optim.lr=0.01"])
    validate(cfg)                # raises ConfigError naming the key
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline import storage
from pipeline.config import ConfigError
from pipeline.data.rows import DecodeConfig
from pipeline.train.batch import accumulation_steps, global_batch, world_range


@dataclass
class InitSection:
    """Where the starting weights come from (the loader table of `pipeline.model.weights`).

    source: `official` (*.pyth), `hf` (TimesformerForVideoClassification folder or state dict),
    `timm` (ImageNet ViT state dict) or `ours` (a `pipeline.model.save` file, e.g. the output of
    `jobs.convert`). Resizing of pos/time embeddings and a new head are reported, never silent.
    """

    source: Literal["official", "hf", "timm", "ours"] = "ours"
    path: str = ""  # checkpoint file or folder (local or object storage)


@dataclass
class ModelSection:
    preset: str = "debug"  # model preset (pipeline.model.presets())
    # Fields of the model's config dataclass (num_classes, attention, num_frames, image_size,
    # drop_path_rate, ...). num_classes defaults to the label count of the train manifest.
    overrides: dict[str, Any] = field(default_factory=dict)
    grad_checkpointing: bool = False  # activation checkpointing per block (memory for compute)
    # torch.compile the transformer blocks (pipeline/model/compile.py); one warning and eager where the
    # compiler cannot run. Off: on the CPU machine it measured no faster than eager after a ~1 min compile
    # per worker (docs/BENCHMARKS.md, "Model").
    compile: bool = False  # torch.compile the transformer blocks (eager fallback with one warning)
    init: InitSection | None = None  # starting weights, e.g. {source: official, path: s3://b/k400.pyth}; None: fresh init


@dataclass
class OptimSection:
    name: Literal["sgd", "adamw"] = "sgd"  # optimizer
    lr: float = 0.005  # for `reference_batch` clips per optimizer step; scaled linearly
    reference_batch: int = 64  # the batch `lr` is tuned for
    momentum: float = 0.9  # sgd
    nesterov: bool = True  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    weight_decay: float = 1e-4  # not applied to biases, norms and the cls/pos/time embeddings
    schedule: Literal["step", "cosine"] = "step"  # lr schedule after warmup
    warmup_epochs: float = 0.0  # linear warmup from 0 to the peak lr
    milestones: list[float] = field(default_factory=lambda: [11.0, 14.0])  # epochs (step schedule)
    gamma: float = 0.1  # step schedule factor per milestone
    min_lr: float = 0.0  # cosine floor
    label_smoothing: float = 0.0  # share of the target spread uniformly over all classes
    mixup_alpha: float = 0.0  # 0 = off
    grad_clip: float | None = None  # max global grad norm; None = off
    # Clips per optimizer step over all workers, the same at every world size; micro-batches are
    # accumulated to reach it. None = batch_size * num_workers (the largest, when elastic).
    effective_batch: int | None = None


@dataclass
class LoopSection:
    epochs: int = 15  # passes over the train manifest, each with fresh random clips
    batch_size: int = 8  # clips per worker per micro-batch
    eval_batch_size: int | None = None  # default: batch_size
    eval_every_epochs: int = 1  # clip accuracy on val_manifest every N epochs (and at the end)
    checkpoint_every_steps: int = 500  # plus one at the end
    keep_checkpoints: int = 3  # newest checkpoints kept in the run folder
    log_every_steps: int = 10  # metrics report interval (each report is a round trip through Ray Train)
    seed: int = 0  # fixes clips, crops, shuffles and init
    prefetch_batches: int = 2  # batches Ray Data prepares ahead of each worker
    # Decode the validation clips once, before training, and keep them in the object store
    # (small validation sets; a large one is better streamed again every evaluation).
    cache_val: bool = False
    # Testing hook: the last worker exits (os._exit) once, this many seconds after the report of
    # this step, unless the run folder already holds the marker `fault_injected`.
    fail_once_at_step: int | None = None
    fail_delay_s: float = 3.0  # testing hook: seconds between that report and the exit
    # Write which clips every step consumed (epoch, video_id, clip_index) to <run folder>/clips/
    # at each checkpoint: an audit that each clip of each epoch is consumed once across restarts.
    record_clips: bool = False


@dataclass
class ScaleSection:
    # Ray Train workers (one per GPU with use_gpu): a number, or [min, max] for elastic training
    # (Ray Train starts with as many as the cluster holds, at least min, and resizes the group
    # when nodes go or come; the global batch stays optim.effective_batch at every size).
    num_workers: int | list[int] = 2
    # elastic: how often (seconds) Ray Train considers growing a running group. A resize restarts
    # the group from the latest checkpoint, so steps since that checkpoint are trained again.
    resize_interval_s: float = 60.0
    use_gpu: bool = False  # one GPU per worker; bf16 autocast
    resources_per_worker: dict[str, float] = field(default_factory=dict)  # e.g. {CPU: 8, GPU: 1}


@dataclass
class RunSection:
    name: str = "debug"  # run folder name; the same name again resumes
    storage_path: str = "runs"  # local folder or s3://bucket/prefix
    max_failures: int = 0  # worker-group restarts from the latest checkpoint
    ray_train_logs: bool = False  # Ray Train's own INFO lines (per report, checkpoint, worker group); off: warnings only
    tensorboard: bool = False  # TensorBoard event files (the `tracking` extra), in tensorboard_dir
    tensorboard_dir: str = ""  # default: <run folder>/tensorboard
    mlflow_uri: str = ""  # MLflow tracking URI (file:/path/mlruns, http://host:5000); empty: no MLflow
    mlflow_experiment: str = "video-transformers"  # MLflow experiment of the run


@dataclass
class EvalSection:
    """Video-level multi-view evaluation (`--eval-only`, and `jobs.train` after training)."""

    checkpoint: str = ""  # default: <run folder>/model.pt
    batch_size: int = 8  # views per scoring batch
    device: str = "auto"  # the model actors of --eval-only: auto (on GPU nodes when the cluster has or can add them), cpu or cuda
    allow_resample: bool = False  # accept data.num_frames other than the model's (its time / position embedding is resampled)


@dataclass
class TrainJobConfig:
    train_manifest: str = ""  # manifest URI of the training videos (required to train)
    val_manifest: str = ""  # manifest URI of the validation videos (required)
    labels: str = ""  # labels.json URI; default: beside the train manifest or derived from it
    # Read both manifests as HowTo100M task CSVs (video_id, task_id) with paths from this template,
    # e.g. "s3://bucket/howto100m/{video_id}.mp4"; empty = ordinary path,label manifests.
    howto100m_template: str = ""
    ray_timeout_s: float = 60.0  # give up (exit 2) when the Ray to join does not answer within this
    data: DecodeConfig = field(default_factory=DecodeConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loop: LoopSection = field(default_factory=LoopSection)
    scale: ScaleSection = field(default_factory=ScaleSection)
    run: RunSection = field(default_factory=RunSection)
    eval: EvalSection = field(default_factory=EvalSection)


def validate(cfg: TrainJobConfig, *, need_train: bool = True) -> None:
    """Checks the schema cannot express; raises `ConfigError` naming the key."""
    if need_train and not cfg.train_manifest:
        raise ConfigError("train_manifest: missing dataset URI (set it in the YAML or --set train_manifest=URI)")
    if not cfg.val_manifest:
        raise ConfigError("val_manifest: missing dataset URI (set it in the YAML or --set val_manifest=URI)")
    if cfg.run.tensorboard and not storage.is_local(cfg.run.tensorboard_dir or cfg.run.storage_path):
        raise ConfigError("run.tensorboard_dir: set a local folder when run.storage_path is on object storage "
                          "(event files are written with local file I/O)")
    positive = {
        "loop.epochs": cfg.loop.epochs, "loop.batch_size": cfg.loop.batch_size,
        "loop.checkpoint_every_steps": cfg.loop.checkpoint_every_steps,
        "loop.keep_checkpoints": cfg.loop.keep_checkpoints, "loop.log_every_steps": cfg.loop.log_every_steps,
        "loop.eval_every_epochs": cfg.loop.eval_every_epochs, "optim.reference_batch": cfg.optim.reference_batch,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr: must be > 0, got {cfg.optim.lr}")
    if not 0.0 <= cfg.optim.label_smoothing < 1.0:
        raise ConfigError(f"optim.label_smoothing: must be in [0, 1), got {cfg.optim.label_smoothing}")
    if cfg.optim.mixup_alpha < 0:
        raise ConfigError(f"optim.mixup_alpha: must be >= 0, got {cfg.optim.mixup_alpha}")
    if cfg.model.init is not None and not cfg.model.init.path:
        raise ConfigError("model.init.path: missing checkpoint path for model.init")
    if not cfg.run.name or "/" in cfg.run.name:
        raise ConfigError(f"run.name: must be a non-empty name without '/', got {cfg.run.name!r}")
    _check_workers(cfg)
    _check_model(cfg)


def _check_workers(cfg: TrainJobConfig) -> None:
    """`scale.num_workers` and the global batch: a fixed size accumulates whole micro-batches; an
    elastic one needs at least one clip per worker per step at its largest size."""
    if isinstance(cfg.scale.num_workers, int) and cfg.scale.num_workers < 1:
        raise ConfigError(f"scale.num_workers: must be >= 1, got {cfg.scale.num_workers}")
    lo, hi = world_range(cfg.scale.num_workers)
    if cfg.scale.resize_interval_s < 0:
        raise ConfigError(f"scale.resize_interval_s: must be >= 0, got {cfg.scale.resize_interval_s}")
    if lo == hi:
        accumulation_steps(cfg.optim.effective_batch, cfg.loop.batch_size, hi)
        return
    batch = global_batch(cfg.optim.effective_batch, cfg.loop.batch_size, hi)
    if batch < hi:
        raise ConfigError(f"optim.effective_batch: {batch} clips per step cannot feed {hi} workers "
                          f"(scale.num_workers max); raise it to >= {hi}")


def _check_model(cfg: TrainJobConfig) -> None:
    """The preset and override keys make a model config, and its clips fit it (on the driver)."""
    from pipeline.model import check_clip_shape, preset_config

    try:
        model_cfg = preset_config(cfg.model.preset, **cfg.model.overrides)
    except ConfigError as e:
        raise ConfigError(f"model.overrides: {str(e).replace('top level', 'model.overrides')}") from None
    except ValueError as e:
        raise ConfigError(f"model.preset: {e}") from None
    try:  # whole frames (crop_size None) are checked by the model on the first batch
        check_clip_shape(model_cfg, cfg.data.num_frames, cfg.data.crop_size or model_cfg.image_size)
    except ValueError as e:
        raise ConfigError(f"data.num_frames / data.crop_size: {e}") from None
