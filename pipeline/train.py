"""Ray Train V2: DDP training of a video transformer that streams clips from Ray Data.

    cfg = load_config(TrainJobConfig, "configs/debug.yaml", ["optim.lr=0.01"])
    result = fit(cfg)            # TorchTrainer(train_func, ...).fit()

Layout of a run (`<run.storage_path>/<run.name>/`, local or `s3://`):
    checkpoint_<step>/   Ray Train checkpoints: state.pt (model, optimizer, schedule position,
                         step, epoch) and rng_<rank>.pt (each worker's RNG streams); keep K
    metrics.jsonl        one JSON record per logged step / evaluation / (re)start
    metrics.png          loss, accuracy and lr curves, drawn at the end
    model.pt             the final model in `pipeline.model` format (for `jobs.infer`)
    labels.json, summary.json, errors/ (bad videos, never fatal)

Resume: running the same config again (same `run.name` + `run.storage_path`) continues from the
latest checkpoint; `FailureConfig(max_failures)` restarts a failed worker group the same way.
Either way the already-consumed micro-batches of the current epoch are skipped, so the step count
and the schedule equal those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import storage
from pipeline.config import ConfigError, from_dict, to_dict
from pipeline.data.rows import DataConfig
from pipeline.plots import plot_metrics

# ----------------------------------------------------------------------------------- config


@dataclass
class InitSection:
    """Where the starting weights come from (the model issue's loaders).

    source: `official` (*.pyth), `hf` (TimesformerForVideoClassification folder or state dict),
    `timm` (ImageNet ViT state dict) or `ours` (a `pipeline.model.save` file, e.g. the output of
    `jobs.convert`). Resizing of pos/time embeddings and a new head are reported, never silent.
    """

    source: Literal["official", "hf", "timm", "ours"] = "ours"
    path: str = ""


@dataclass
class ModelSection:
    preset: str = "debug"
    # Fields of the model's config dataclass (num_classes, attention, num_frames, image_size,
    # drop_path_rate, ...). num_classes defaults to the label count of the train manifest.
    overrides: dict[str, Any] = field(default_factory=dict)
    grad_checkpointing: bool = False  # activation checkpointing per block (memory for compute)
    init: InitSection | None = None


@dataclass
class OptimSection:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.005  # for `reference_batch` clips per optimizer step; scaled linearly
    reference_batch: int = 64
    momentum: float = 0.9  # sgd
    nesterov: bool = True  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    weight_decay: float = 1e-4
    schedule: Literal["step", "cosine"] = "step"
    warmup_epochs: float = 0.0  # linear warmup from 0 to the peak lr
    milestones: list[float] = field(default_factory=lambda: [11.0, 14.0])  # epochs (step schedule)
    gamma: float = 0.1  # step schedule factor per milestone
    min_lr: float = 0.0  # cosine floor
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0  # 0 = off
    grad_clip: float | None = None  # max global grad norm; None = off
    # Clips per optimizer step over all workers; micro-batches are accumulated to reach it.
    # None = batch_size * num_workers (no accumulation).
    effective_batch: int | None = None


@dataclass
class LoopSection:
    epochs: int = 15
    batch_size: int = 8  # clips per worker per micro-batch
    eval_batch_size: int | None = None  # default: batch_size
    eval_every_epochs: int = 1
    checkpoint_every_steps: int = 500  # plus one at the end
    keep_checkpoints: int = 3
    log_every_steps: int = 10
    seed: int = 0
    prefetch_batches: int = 2
    # Decode the validation clips once, before training, and keep them in the object store
    # (small validation sets; a large one is better streamed again every evaluation).
    cache_val: bool = False
    # Testing hook: the last worker exits (os._exit) once, this many seconds after the report of
    # this step, unless the run folder already holds the marker `fault_injected`.
    fail_once_at_step: int | None = None
    fail_delay_s: float = 3.0


@dataclass
class ScaleSection:
    num_workers: int = 2
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=dict)


@dataclass
class RunSection:
    name: str = "debug"
    storage_path: str = "runs"  # local folder or s3://bucket/prefix
    max_failures: int = 0


@dataclass
class EvalSection:
    """Video-level multi-view evaluation (`--eval-only`, and `jobs.train` after training)."""

    checkpoint: str = ""  # default: <run folder>/model.pt
    batch_size: int = 8
    device: str = "cpu"


@dataclass
class TrainJobConfig:
    train_manifest: str = ""
    val_manifest: str = ""
    labels: str = ""  # labels.json URI; default: beside the train manifest or derived from it
    # Read both manifests as HowTo100M task CSVs (video_id, task_id) with paths from this template,
    # e.g. "s3://bucket/howto100m/{video_id}.mp4"; empty = ordinary path,label manifests.
    howto100m_template: str = ""
    data: DataConfig = field(default_factory=DataConfig)
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
    positive = {
        "loop.epochs": cfg.loop.epochs, "loop.batch_size": cfg.loop.batch_size,
        "loop.checkpoint_every_steps": cfg.loop.checkpoint_every_steps,
        "loop.keep_checkpoints": cfg.loop.keep_checkpoints, "loop.log_every_steps": cfg.loop.log_every_steps,
        "loop.eval_every_epochs": cfg.loop.eval_every_epochs, "scale.num_workers": cfg.scale.num_workers,
        "optim.reference_batch": cfg.optim.reference_batch,
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
    accumulation_steps(cfg.optim.effective_batch, cfg.loop.batch_size, cfg.scale.num_workers)


# ----------------------------------------------------------------------------------- pure helpers


def accumulation_steps(effective_batch: int | None, batch_size: int, num_workers: int) -> int:
    """Micro-batches per optimizer step so that `batch_size * num_workers * steps == effective_batch`."""
    per_micro = batch_size * num_workers
    if effective_batch is None:
        return 1
    if effective_batch < per_micro or effective_batch % per_micro:
        raise ConfigError(
            f"optim.effective_batch: {effective_batch} is not a positive multiple of "
            f"loop.batch_size x scale.num_workers = {batch_size} x {num_workers} = {per_micro}"
        )
    return effective_batch // per_micro


def scaled_lr(lr: float, reference_batch: int, effective_batch: int) -> float:
    """Linear scaling rule: `lr` is tuned for `reference_batch` clips per step."""
    return lr * effective_batch / reference_batch


def steps_per_epoch(num_clips: int, num_workers: int, batch_size: int, accum: int) -> int:
    """Optimizer steps per epoch: each worker gets `num_clips // num_workers` clips (equal split),
    in full micro-batches of `batch_size` (drop_last), `accum` micro-batches per step."""
    return (num_clips // num_workers) // batch_size // accum


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "step",
    milestones: list[int] | tuple[int, ...] = (),
    gamma: float = 0.1,
    min_lr: float = 0.0,
) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup to `base_lr` over
    `warmup_steps`, then `step` (x gamma at each milestone step) or `cosine` (to `min_lr` at
    `total_steps`)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "step":
        return base_lr * gamma ** sum(1 for m in milestones if step >= m)
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """int64 [B] -> float [B, C]: one-hot with `smoothing` spread uniformly over all classes."""
    one_hot = F.one_hot(labels, num_classes).float()
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy against soft targets (float [B, C] each)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def sample_mixup(alpha: float, batch: int, rng: np.random.Generator) -> tuple[float, torch.Tensor]:
    """(lam ~ Beta(alpha, alpha), a random permutation of the batch), drawn from `rng` only."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(batch))
    return lam, perm


def mixup(x: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each clip and its soft target with the clip `perm[i]`: lam * a + (1 - lam) * b."""
    return lam * x + (1.0 - lam) * x[perm], lam * targets + (1.0 - lam) * targets[perm]


# ----------------------------------------------------------------------------------- model & optimizer


def build_model(section: ModelSection, num_classes: int) -> nn.Module:
    """The model of `section` (fresh init, or weights from `section.init`, loaded strictly)."""
    from pipeline import model as models

    overrides = {"num_classes": num_classes, **section.overrides}
    if section.grad_checkpointing:
        overrides["grad_checkpointing"] = True
    model = models.create(section.preset, **overrides)
    if section.init is not None:
        state, report = load_init_weights(section.init, model)
        model.load_state_dict(state)
        print(f"[train] init weights: {report}", flush=True)
    return model


def load_init_weights(init: InitSection, model: nn.Module) -> tuple[dict[str, torch.Tensor], Any]:
    """(state_dict fitted to `model`, load report) from an official / HF / timm / our checkpoint."""
    from pipeline import model as models
    from pipeline.model import weights

    if getattr(model, "family", None) != "timesformer":
        raise ConfigError(f"model.init: weight import supports TimeSformer only, not {model.family!r}")
    if init.source == "ours":
        source: Any = models.read_checkpoint(init.path)["state_dict"]
        return weights.load_official(source, model.config)
    loader = {"official": weights.load_official, "hf": weights.load_hf, "timm": weights.load_timm_vit}[init.source]
    return loader(init.path, model.config)


def build_optimizer(model: nn.Module, section: OptimSection, lr: float) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW; no weight decay on biases, norms and embeddings (1-D
    tensors and the cls/pos/time tokens), as in the official code."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed", "time_embed"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": section.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if section.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=section.momentum, nesterov=section.nesterov)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(section.betas))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ----------------------------------------------------------------------------------- checkpoint state


def rng_state(np_rng: np.random.Generator) -> dict[str, Any]:
    """Every RNG stream a worker uses (weights_only-safe values)."""
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np_rng.bit_generator.state,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    np_rng.bit_generator.state = state["numpy"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, *, step: int, epoch: int,
                   schedule: dict[str, Any]) -> dict[str, Any]:
    """What `state.pt` of a checkpoint holds; `model` is the unwrapped (non-DDP) module."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": dict(schedule),  # lr_at() is a pure function of the step: its arguments
        "step": step,
        "epoch": epoch,
    }


def save_checkpoint_dir(folder: str, rank: int, state: dict[str, Any] | None, rngs: dict[str, Any]) -> None:
    """Write this worker's part of a checkpoint: rank 0 the training state, every rank its RNGs."""
    if state is not None:
        torch.save(state, os.path.join(folder, "state.pt"))
    torch.save(rngs, os.path.join(folder, f"rng_{rank}.pt"))


def load_checkpoint_dir(folder: str, rank: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(training state, this rank's RNG state or None when the world size changed)."""
    state = torch.load(os.path.join(folder, "state.pt"), map_location="cpu", weights_only=True)
    rng_path = os.path.join(folder, f"rng_{rank}.pt")
    rngs = torch.load(rng_path, map_location="cpu", weights_only=True) if os.path.exists(rng_path) else None
    return state, rngs


# ----------------------------------------------------------------------------------- metrics


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory of this process: CUDA allocator peak, or the process max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def metrics_uri(run_dir: str) -> str:
    return storage.join(run_dir, "metrics.jsonl")


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """The records of `metrics.jsonl` ([] when absent)."""
    uri = metrics_uri(run_dir)
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_bytes(uri).decode().splitlines() if line.strip()]


def write_metrics(run_dir: str, records: list[dict[str, Any]]) -> None:
    """Rewrite `metrics.jsonl` atomically (object stores cannot append)."""
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    storage.write_bytes_atomic(metrics_uri(run_dir), text.encode())




# ----------------------------------------------------------------------------------- plan (driver)


@dataclass
class Plan:
    """Numbers the driver fixes before training: the same on every worker and every restart."""

    num_classes: int
    labels: list[str]
    num_train_clips: int
    steps_per_epoch: int
    total_steps: int
    accum: int
    effective_batch: int
    base_lr: float  # after linear scaling
    warmup_steps: int
    milestones: list[int]  # in steps
    run_dir: str
    data_start_epoch: int = 0  # the train stream was built to start at this epoch (re-runs)


def make_plan(cfg: TrainJobConfig, num_train_clips: int, labels: list[str], data_start_epoch: int = 0) -> Plan:
    """Steps, accumulation and the lr schedule in steps, from the config and the corpus size."""
    accum = accumulation_steps(cfg.optim.effective_batch, cfg.loop.batch_size, cfg.scale.num_workers)
    effective = cfg.loop.batch_size * cfg.scale.num_workers * accum
    spe = steps_per_epoch(num_train_clips, cfg.scale.num_workers, cfg.loop.batch_size, accum)
    if spe < 1:
        raise ConfigError(
            f"loop.batch_size: {num_train_clips} training clips give no full step of "
            f"{effective} clips (batch_size x num_workers x accumulation); lower loop.batch_size"
        )
    num_classes = int(cfg.model.overrides.get("num_classes", len(labels)))
    if labels and num_classes < len(labels):
        raise ConfigError(f"model.overrides.num_classes: {num_classes} < {len(labels)} labels in the manifest")
    return Plan(
        num_classes=num_classes,
        labels=list(labels),
        num_train_clips=num_train_clips,
        steps_per_epoch=spe,
        total_steps=spe * cfg.loop.epochs,
        accum=accum,
        effective_batch=effective,
        base_lr=scaled_lr(cfg.optim.lr, cfg.optim.reference_batch, effective),
        warmup_steps=int(round(cfg.optim.warmup_epochs * spe)),
        milestones=[int(round(m * spe)) for m in cfg.optim.milestones],
        run_dir=run_dir_of(cfg.run),
        data_start_epoch=data_start_epoch,
    )


def resume_skip(step: int, plan: Plan) -> int:
    """Micro-batches of the train stream to skip when resuming at `step`: those an uninterrupted
    run consumed since the first epoch of the stream (0 when the stream starts later)."""
    return max(0, step - plan.data_start_epoch * plan.steps_per_epoch) * plan.accum


def run_dir_of(run: RunSection) -> str:
    """`<storage_path>/<name>`: where Ray Train and we keep everything of one run."""
    return storage.join(run.storage_path, run.name)


def schedule_of(cfg: TrainJobConfig, plan: Plan) -> dict[str, Any]:
    """The keyword arguments of `lr_at` for this run."""
    return {
        "base_lr": plan.base_lr, "total_steps": plan.total_steps, "warmup_steps": plan.warmup_steps,
        "schedule": cfg.optim.schedule, "milestones": list(plan.milestones), "gamma": cfg.optim.gamma,
        "min_lr": cfg.optim.min_lr,
    }


# ----------------------------------------------------------------------------------- worker loop


BATCH_DTYPES = {"frames": torch.uint8, "label": torch.int64}  # every column the loop reads


def _autocast(device: torch.device):
    """bf16 autocast on GPU; full fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if hasattr(net, "module") else net


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[dict[str, torch.Tensor]], *,
               cfg: TrainJobConfig, plan: Plan, device: torch.device, np_rng: np.random.Generator,
               lr: float) -> dict[str, float] | None:
    """One optimizer step over `plan.accum` micro-batches; None when the shard ran out first."""
    model = _unwrap(net)
    mean, std = model.config.mean, model.config.std
    from pipeline.model.forward import to_model_input

    net.train()
    wait = 0.0
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    clips = 0
    for i in range(plan.accum):
        t0 = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - t0
        if batch is None:
            optimizer.zero_grad(set_to_none=True)
            return None
        frames = batch["frames"].to(device, non_blocking=True)  # uint8 [B, T, H, W, 3]
        labels = batch["label"].to(device, non_blocking=True)
        x = to_model_input(frames, mean, std)  # float [B, 3, T, H, W]
        targets = soft_targets(labels, plan.num_classes, cfg.optim.label_smoothing)
        if cfg.optim.mixup_alpha > 0:
            lam, perm = sample_mixup(cfg.optim.mixup_alpha, len(labels), np_rng)
            x, targets = mixup(x, targets, lam, perm.to(device))
        last = i == plan.accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()
        with sync:
            with _autocast(device):
                logits = net(x)
            loss = soft_cross_entropy(logits, targets)
            (loss / plan.accum).backward()
        loss_sum += loss.detach() * len(labels)
        correct += (logits.detach().argmax(-1) == labels).sum()
        clips += len(labels)
    if cfg.optim.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
    set_lr(optimizer, lr)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss_sum": float(loss_sum), "correct": float(correct), "clips": clips, "wait_s": wait}


@torch.no_grad()
def evaluate_clips(net: nn.Module, shard: Any, *, batch_size: int,
                   device: torch.device) -> dict[str, float]:
    """Clip accuracy and loss over this worker's validation shard, summed over all workers."""
    from pipeline.model.forward import to_model_input

    model = _unwrap(net)
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=BATCH_DTYPES, drop_last=False):
        frames = batch["frames"].to(device)
        labels = batch["label"].to(device)
        with _autocast(device):
            logits = model(to_model_input(frames, model.config.mean, model.config.std))
        loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        correct += float((logits.argmax(-1) == labels).sum())
        count += len(labels)
    loss_sum, correct, count = _all_reduce_sum([loss_sum, correct, count], device)
    return {"val_loss": loss_sum / max(count, 1), "val_acc": correct / max(count, 1), "val_clips": int(count)}


def new_window() -> dict[str, float]:
    """Running sums between two logged steps."""
    return {"loss_sum": 0.0, "correct": 0.0, "clips": 0, "wait_s": 0.0, "time_s": 0.0, "steps": 0}


def window_metrics(window: dict[str, float], *, step: int, plan: Plan, lr: float, world: int,
                   device: torch.device) -> dict[str, Any]:
    """Train metrics over the steps since the last log: loss, acc, lr, clips/s (all workers),
    fraction of step time spent waiting for data, mean step time, peak device memory."""
    clips, secs = max(window["clips"], 1), max(window["time_s"], 1e-9)
    return {
        "kind": "train", "step": step, "epoch": step / plan.steps_per_epoch,
        "loss": window["loss_sum"] / clips, "acc": window["correct"] / clips, "lr": lr,
        "clips_per_s": window["clips"] * world / secs,
        "data_wait_frac": window["wait_s"] / secs,
        "step_time_s": secs / max(window["steps"], 1),
        "peak_mem_mb": peak_memory_mb(device), "time": time.time(),
    }


def _maybe_inject_failure(cfg: TrainJobConfig, plan: Plan, step: int, rank: int, world: int) -> None:
    """Testing hook (`loop.fail_once_at_step`): the last worker dies once, after a delay."""
    if cfg.loop.fail_once_at_step != step or rank != world - 1:
        return
    marker = storage.join(plan.run_dir, "fault_injected")
    if storage.exists(marker):
        return
    storage.write_bytes_atomic(marker, f"rank {rank} exits after step {step}\n".encode())
    print(f"[train] fault injection: rank {rank} exits in {cfg.loop.fail_delay_s}s", flush=True)
    time.sleep(cfg.loop.fail_delay_s)
    os._exit(1)


def restore(checkpoint: Any, rank: int, model: nn.Module, optimizer: torch.optim.Optimizer,
            np_rng: np.random.Generator) -> int:
    """Load a Ray Train checkpoint into model, optimizer and this worker's RNGs; returns its step."""
    with checkpoint.as_directory() as folder:
        state, rngs = load_checkpoint_dir(folder, rank)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if rngs is not None:
        set_rng_state(rngs, np_rng)
    return int(state["step"])


def finish(model: nn.Module, records: list[dict[str, Any]], plan: Plan, step: int) -> None:
    """Rank 0 at the end: metrics.jsonl, metrics.png and model.pt (our format) in the run folder."""
    from pipeline import model as models

    records.append({"kind": "end", "step": step, "time": time.time()})
    write_metrics(plan.run_dir, records)
    plot_metrics(records, storage.join(plan.run_dir, "metrics.png"))
    models.save(model, storage.join(plan.run_dir, "model.pt"), step=step, labels=plan.labels)
    print(f"[train] done at step {step}; model -> {storage.join(plan.run_dir, 'model.pt')}", flush=True)


def train_func(config: dict) -> None:
    """Ray Train worker loop. `config = {"job": to_dict(TrainJobConfig), "plan": asdict(Plan)}`."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    cfg = from_dict(TrainJobConfig, config["job"])
    plan = Plan(**config["plan"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.loop.seed * 1000 + rank)
    random.seed(cfg.loop.seed * 1000 + rank)
    np_rng = np.random.default_rng([cfg.loop.seed, rank])

    checkpoint = ray.train.get_checkpoint()
    model = build_model(
        ModelSection(cfg.model.preset, cfg.model.overrides, cfg.model.grad_checkpointing,
                     cfg.model.init if checkpoint is None else None),
        plan.num_classes,
    ).to(device)
    optimizer = build_optimizer(model, cfg.optim, plan.base_lr)
    schedule = schedule_of(cfg, plan)
    step = restore(checkpoint, rank, model, optimizer, np_rng) if checkpoint is not None else 0
    resumed_from = step if checkpoint is not None else None
    net = ray.train.torch.prepare_model(model)  # DDP when world > 1

    records: list[dict[str, Any]] = []
    if rank == 0:
        if checkpoint is not None:
            records = [r for r in read_metrics(plan.run_dir) if r.get("step", 0) <= step]
        records.append({"kind": "start", "step": step, "epoch": step // plan.steps_per_epoch,
                        "resumed_from": resumed_from, "world_size": world, "time": time.time()})
        print(f"[train] {'resumed at step %d' % step if checkpoint else 'start'}; "
              f"{plan.total_steps} steps, {plan.steps_per_epoch}/epoch, accum {plan.accum}", flush=True)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    eval_bs = cfg.loop.eval_batch_size or cfg.loop.batch_size
    last_ckpt_step = step if checkpoint is not None else -1
    window = new_window()
    epoch = step // plan.steps_per_epoch

    def report(metrics: dict[str, Any], with_checkpoint: bool) -> None:
        nonlocal last_ckpt_step
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            state = None
            if rank == 0:
                state = training_state(_unwrap(net), optimizer, step=step, epoch=step // plan.steps_per_epoch,
                                       schedule=schedule)
            save_checkpoint_dir(folder, rank, state, rng_state(np_rng))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder),
                             checkpoint_dir_name=f"checkpoint_{step:08d}")
        last_ckpt_step = step
        if rank == 0:
            write_metrics(plan.run_dir, records)

    # One stream over all epochs (the builder reshuffles and resamples clips per epoch); an
    # uninterrupted run consumes `step * accum` micro-batches by step `step`, so a resumed one
    # skips exactly that many (counted from the epoch the stream was built to start at).
    batches = iter(train_shard.iter_torch_batches(
        batch_size=cfg.loop.batch_size, dtypes=BATCH_DTYPES, drop_last=True,
        prefetch_batches=cfg.loop.prefetch_batches))
    skip = resume_skip(step, plan)
    t_skip = time.perf_counter()
    for _ in range(skip):
        next(batches, None)
    if skip and rank == 0:
        print(f"[train] skipped {skip} consumed micro-batches in {time.perf_counter() - t_skip:.1f}s", flush=True)
    while step < plan.total_steps:
        lr = lr_at(step, **schedule)
        t0 = time.perf_counter()
        out = train_step(net, optimizer, batches, cfg=cfg, plan=plan, device=device, np_rng=np_rng, lr=lr)
        if out is None:
            if rank == 0:
                print(f"[train] the train stream ran out at step {step} of {plan.total_steps} "
                      "(rows dropped as errors?)", flush=True)
            break
        step += 1
        window["time_s"] += time.perf_counter() - t0
        for k in ("loss_sum", "correct", "clips", "wait_s"):
            window[k] += out[k]
        window["steps"] += 1
        epoch_end = step % plan.steps_per_epoch == 0
        epoch = step // plan.steps_per_epoch
        do_eval = epoch_end and (epoch % cfg.loop.eval_every_epochs == 0 or step == plan.total_steps)
        metrics: dict[str, Any] = {}
        # a report is a round trip through the Ray Train controller: log at the set interval and
        # with each validation, not at every (possibly short) epoch end
        if step % cfg.loop.log_every_steps == 0 or do_eval:
            metrics = window_metrics(window, step=step, plan=plan, lr=lr, world=world, device=device)
            window = new_window()
            if rank == 0:
                records.append(dict(metrics))
        if do_eval:
            val = evaluate_clips(net, val_shard, batch_size=eval_bs, device=device)
            metrics.update(val)
            if rank == 0:
                records.append({"kind": "val", "step": step, "epoch": epoch, **val, "time": time.time()})
                print(f"[train] step {step} epoch {epoch}: val_acc {val['val_acc']:.3f} "
                      f"loss {metrics.get('loss', float('nan')):.3f}", flush=True)
        do_ckpt = step % cfg.loop.checkpoint_every_steps == 0 or step == plan.total_steps
        if metrics or do_ckpt:
            metrics["step"] = step
            report(metrics, do_ckpt)
            _maybe_inject_failure(cfg, plan, step, rank, world)

    if step != last_ckpt_step:  # the stream ran out early
        report({"step": step}, True)
    if rank == 0:
        finish(_unwrap(net), records, plan, step)


# ----------------------------------------------------------------------------------- driver


def load_splits(cfg: TrainJobConfig) -> tuple[Any, Any]:
    """(train Manifest, val Manifest) with one label map (the train one) for both."""
    from pipeline.data.manifest import load_manifest

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
    clips each), `val` the centre clips; only `frames` and `label` travel to the workers."""
    from pipeline.data.dataset import build_clip_dataset

    run_dir = run_dir_of(cfg.run)
    train = build_clip_dataset(train_rows, cfg.data, mode="train", seed=cfg.loop.seed,
                               error_uri=storage.join(run_dir, "errors"), epoch=data_start_epoch,
                               epochs=max(1, cfg.loop.epochs - data_start_epoch))
    val = build_clip_dataset(val_rows, cfg.data, mode="val", seed=cfg.loop.seed,
                             error_uri=storage.join(run_dir, "errors"), materialize=cfg.loop.cache_val)
    return {"train": train.select_columns(["frames", "label"]), "val": val.select_columns(["frames", "label"])}


def latest_checkpoint_step(run_dir: str) -> int | None:
    """The highest step among `checkpoint_<step>` folders of a run (None when there are none)."""
    fs, path = storage.filesystem(run_dir)
    if not fs.exists(path):
        return None
    steps = []
    for entry in fs.ls(path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("checkpoint_") and name[len("checkpoint_"):].isdigit():
            steps.append(int(name[len("checkpoint_"):]))
    return max(steps) if steps else None


def ray_storage(storage_path: str) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for RunConfig: absolute local path, or for object
    stores the bucket path plus a pyarrow filesystem that knows the endpoint (S3-compatible)."""
    if storage.is_local(storage_path):
        return storage.local_path(storage_path), None
    fs, path = storage.arrow_filesystem(storage_path)
    return path, fs


def make_trainer(cfg: TrainJobConfig, plan: Plan, datasets: dict[str, Any]):
    """The TorchTrainer of this job."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

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
        num_train_clips = len(train.rows)
        probe = make_plan(cfg, num_train_clips, labels)
        last = latest_checkpoint_step(run_dir)
        start_epoch = 0 if last is None else min(last // probe.steps_per_epoch, cfg.loop.epochs - 1)
        datasets = build_datasets(cfg, train.rows, val.rows, data_start_epoch=start_epoch)
        manifest_errors = train.errors + val.errors
        if manifest_errors:
            from pipeline.data.errors import write_errors

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


def evaluate_run(cfg: TrainJobConfig) -> dict[str, Any]:
    """`--eval-only`: video-level multi-view evaluation of a trained model on `val_manifest`.

    Views: `data.clips` temporal clips x `data.crops` crops per video (set
    `data.crops=3` for the official 1 x 3 protocol), decoded by Ray Data, scored on the
    driver (`eval.device`). Writes `eval.json` to the run folder and returns it.
    """
    from pipeline import model as models
    from pipeline.data.dataset import build_clip_dataset
    from pipeline.data.manifest import load_manifest
    from pipeline.evaluate import evaluate_views

    validate(cfg, need_train=False)
    run_dir = run_dir_of(cfg.run)
    ckpt = cfg.eval.checkpoint or storage.join(run_dir, "model.pt")
    if not storage.exists(ckpt):
        raise ConfigError(f"eval.checkpoint: no model at {ckpt} (train first, or set eval.checkpoint=URI)")
    labels_uri = storage.join(run_dir, "labels.json")
    val = load_manifest(cfg.val_manifest, labels=labels_uri if storage.exists(labels_uri) else (cfg.labels or None),
                        howto100m_template=cfg.howto100m_template or None)
    model = models.load(ckpt)
    ds = build_clip_dataset(val.rows, cfg.data, mode="test", seed=cfg.loop.seed,
                            error_uri=storage.join(run_dir, "eval_errors"))
    ds = ds.select_columns(["frames", "label", "video_id"])
    t0 = time.perf_counter()
    result = evaluate_views(model, ds.iter_batches(batch_size=cfg.eval.batch_size, batch_format="numpy"),
                            device=cfg.eval.device)
    result.update({"checkpoint": ckpt, "manifest": cfg.val_manifest, "clips_per_video": cfg.data.clips,
                   "crops": cfg.data.crops, "seconds": time.perf_counter() - t0,
                   "manifest_errors": len(val.errors)})
    storage.write_json(storage.join(run_dir, "eval.json"), result)
    return result
