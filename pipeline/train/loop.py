"""The Ray Train worker loop: `train_func` and the step, evaluation and reporting it is made of.

    set up -> restore -> for each step: train_step -> log rule -> eval rule -> checkpoint rule -> finish

The rules (`schedule.should_log / should_eval / should_checkpoint`) are pure functions of the step;
the side effects of a report (Ray Train metrics, a checkpoint, rank 0's `metrics.jsonl`) live in
`Reporter`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import os
import tempfile
import time
from typing import Any, Iterator

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import storage
from pipeline.config import from_dict, to_dict
from pipeline.data.clips import ClipConfig
from pipeline.model.compile import compile_blocks
from pipeline.model.forward import clip_logits, forward_logits, model_input, unwrap
from pipeline.model.recipe import make_recipe
from pipeline.plots import plot_metrics
from pipeline.train.build import build_model, build_optimizer, set_lr
from pipeline.data.position import position
from pipeline.train.checkpoint import (
    checkpoint_name, restore, rng_state, save_checkpoint_dir, seed_worker, training_state,
)
from pipeline.train.config import TrainJobConfig
from pipeline.train.losses import mixup, sample_mixup, soft_cross_entropy, soft_targets
from pipeline.progress import eta_seconds
from pipeline.train.metrics import Window, progress_line, read_metrics, write_metrics
from pipeline.train.trackers import Trackers
from pipeline.train.schedule import (
    Plan, layout_of, lr_at, schedule_of, should_checkpoint, should_eval, should_log,
)
from pipeline.train.stream import BATCH_DTYPES, TrainData, all_reduce_sum, start_position



def train_func(config: dict) -> None:
    """Ray Train worker loop. `config = {"job": to_dict(TrainJobConfig), "plan": asdict(Plan),
    "train_table": [ref of the train split's manifest table] (absent: a given "train" dataset)}`."""
    cfg = from_dict(TrainJobConfig, config["job"])
    plan = Plan(**config["plan"])
    quiet_worker_reports(cfg.run.ray_train_logs)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    np_rng = seed_worker(cfg.loop.seed, rank)

    checkpoint = ray.train.get_checkpoint()
    init = cfg.model.init if checkpoint is None else None  # a checkpoint holds the weights
    model = build_model(dataclasses.replace(cfg.model, init=init), plan.num_classes).to(device)
    if cfg.model.compile:
        compile_blocks(model, device)  # in place, before DDP; eager (one warning) where it cannot run
    optimizer = build_optimizer(model, cfg.optim, plan.base_lr)
    step, saved = restore(checkpoint, rank, model, optimizer, np_rng) if checkpoint is not None else (0, {})
    net = ray.train.torch.prepare_model(model)  # DDP when world > 1
    schedule = schedule_of(cfg, plan)
    trackers = Trackers.open(cfg.run, plan.run_dir, config=to_dict(cfg), start_step=step) if rank == 0 else None
    reporter = Reporter(net, optimizer, np_rng, schedule, plan, rank, trackers, counts=saved.get("clips"))
    table = config.get("train_table")
    here, warning, accum = start_position(plan, step, saved.get("data"), streaming=table is not None, rank=rank,
                                          world=world, batch_size=cfg.loop.batch_size)
    if warning and rank == 0:
        console(f"[train] warning: {warning}")
    reporter.start(step, resumed=checkpoint is not None, world=world, data=here, accum=accum)
    data = TrainData(cfg, plan, table, step=step, rank=rank, world=world, device=device)  # a resume's data cost
    val_shard = ray.train.get_dataset_shard("val")
    window = Window()

    while step < plan.total_steps:
        lr = lr_at(step, **schedule)
        t0 = time.perf_counter()
        batches, accum, weight = data.batches(step)
        out = train_step(net, optimizer, batches, cfg=cfg, plan=plan, device=device, np_rng=np_rng, lr=lr,
                         accum=accum, clip_weight=weight)
        if out is None:
            reporter.say(f"the train stream ran out at step {step} of {plan.total_steps} (rows dropped as errors?)")
            break
        step += 1
        window.add(out, time.perf_counter() - t0)
        metrics: dict[str, Any] = {}
        if should_log(step, plan, cfg.loop):
            metrics = window.metrics(step=step, steps_per_epoch=plan.steps_per_epoch, lr=lr, world=world,
                                     device=device)
            window = Window()
            reporter.log(metrics)
        if should_eval(step, plan, cfg.loop):
            val = evaluate_clips(net, val_shard, batch_size=cfg.loop.eval_batch_size or cfg.loop.batch_size,
                                 device=device)
            metrics.update(val)
            reporter.record_val(step, val, train_loss=metrics.get("loss", float("nan")))
        checkpoint_now = should_checkpoint(step, plan, cfg.loop)
        if metrics or checkpoint_now:
            reporter.report(step, metrics, checkpoint=checkpoint_now, data=data)
            maybe_inject_failure(cfg, plan, step, rank, world)

    if step != reporter.last_checkpoint:  # the stream ran out early
        reporter.report(step, {}, checkpoint=True, data=data)
    reporter.finish(step, cfg.data, data)


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[dict[str, Any]], *,
               cfg: TrainJobConfig, plan: Plan, device: torch.device, np_rng: np.random.Generator,
               lr: float, accum: int | None = None, clip_weight: float | None = None) -> dict[str, Any] | None:
    """One optimizer step over `accum` (default `plan.accum`) micro-batches; None when the shard
    ran out first. Each clip's loss counts `clip_weight` (default: 1 / (batch_size x accum), the
    mean over full micro-batches) in the gradient; a micro-batch marked `dummy` counts 0.

    `loss_sum` and `correct` stay on the device (no host sync in the step): read them at a log."""
    accum = plan.accum if accum is None else accum
    weight = 1.0 / (cfg.loop.batch_size * accum) if clip_weight is None else clip_weight
    net.train()
    wait = 0.0
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    clips = decoded = kept = 0
    for i in range(accum):
        t0 = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - t0
        if batch is None:
            optimizer.zero_grad(set_to_none=True)
            return None
        dummy = bool(batch.get("dummy"))
        if "kept_frames" in batch:  # decode work of these clips (CPU tensors: no device sync)
            decoded += int(batch["decoded_frames"].sum())
            kept += int(batch["kept_frames"].sum())
        labels = batch["label"].to(device, non_blocking=True)
        x = model_input(net, batch["frames"])  # uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W]
        targets = soft_targets(labels, plan.num_classes, cfg.optim.label_smoothing)
        if cfg.optim.mixup_alpha > 0:
            lam, perm = sample_mixup(cfg.optim.mixup_alpha, len(labels), np_rng)
            x, targets = mixup(x, targets, lam, perm.to(device))
        last = i == accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()
        with sync:
            logits = forward_logits(net, x)
            loss = soft_cross_entropy(logits, targets)
            (loss * (0.0 if dummy else weight * len(labels))).backward()
        if dummy:
            continue
        loss_sum += loss.detach() * len(labels)
        correct += (logits.detach().argmax(-1) == labels).sum()
        clips += len(labels)
    if cfg.optim.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
    set_lr(optimizer, lr)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss_sum": loss_sum, "correct": correct, "clips": clips, "wait_s": wait,
            "decoded_frames": decoded, "kept_frames": kept}


@torch.no_grad()
def evaluate_clips(net: nn.Module, shard: Any, *, batch_size: int, device: torch.device) -> dict[str, float]:
    """Clip accuracy and loss over this worker's validation shard, summed over all workers.

    The unwrapped model runs (no DDP collectives: shards may differ in their number of batches)."""
    model = unwrap(net)
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, correct: on the device until the end
    count = 0
    for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=BATCH_DTYPES, drop_last=False):
        labels = batch["label"].to(device)
        logits = clip_logits(model, batch["frames"])
        sums[0] += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        sums[1] += (logits.argmax(-1) == labels).sum()
        count += len(labels)
    loss_sum, correct, count = all_reduce_sum([*sums.tolist(), float(count)], device)
    return {"val_loss": loss_sum / max(count, 1), "val_acc": correct / max(count, 1), "val_clips": int(count)}


def console(line: str) -> None:
    """One line on the worker's stdout (Ray forwards it to the driver once).

    Not `print`: Ray Train patches a worker's `print` to log through the root logger and, when
    `sys.stdout` is wrapped, also to print, which shows each line twice in some drivers.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def quiet_worker_reports(verbose: bool) -> None:
    """Ray Train's worker context logs every `report` at INFO ("Reporting training result ...",
    a long line per report per rank) under a logger named after its file; the run's own progress
    line says the same. Keep it at WARNING unless `run.ray_train_logs`."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: nothing to quiet
        return
    logging.getLogger(train_context.__file__).setLevel(logging.INFO if verbose else logging.WARNING)


class Reporter:
    """One worker's side effects: Ray Train reports and checkpoints, and (rank 0) the run's
    `metrics.jsonl` records, rewritten at every log interval (with a progress line on the console)
    and at the end with the plot and `model.pt`."""

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer, np_rng: np.random.Generator,
                 schedule: dict[str, Any], plan: Plan, rank: int, trackers: Trackers | None = None,
                 counts: dict[str, int] | None = None):
        self.net, self.optimizer, self.np_rng = net, optimizer, np_rng
        # clips decoded / consumed by the run's attempts before this one (up to its checkpoint)
        self.counts_before = dict(counts or {"decoded": 0, "consumed": 0})
        self.schedule, self.plan, self.rank = schedule, plan, rank
        self.trackers = trackers  # TensorBoard / MLflow (rank 0, when the config turns them on)
        self.records: list[dict[str, Any]] = []
        self.last_checkpoint = -1  # the step of the last checkpoint this worker group stored
        self.eta_from: tuple[int, float] | None = None  # (step, time) of this attempt's first log line

    def say(self, message: str) -> None:
        if self.rank == 0:
            console(f"[train] {message}")

    def record(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            self.records.append(dict(record))
            if self.trackers is not None and record.get("kind") in ("train", "val"):
                self.trackers.log(record)

    def log(self, record: dict[str, Any]) -> None:
        """A `train` record: kept, printed as one line and written to `metrics.jsonl` (rank 0)."""
        if self.rank != 0:
            return
        self.record(record)
        # the rate since this attempt's first log line: start-up (workers, first batches) is not a step
        now, step = time.perf_counter(), record["step"]
        if self.eta_from is None:
            self.eta_from, eta = (step, now), None
        else:
            eta = eta_seconds(step - self.eta_from[0], self.plan.total_steps - self.eta_from[0], now - self.eta_from[1])
        self.say(progress_line(record, self.plan.total_steps, eta))
        write_metrics(self.plan.run_dir, self.records)

    def start(self, step: int, *, resumed: bool, world: int, data: dict[str, Any] | None = None,
              accum: int | None = None) -> None:
        """The `start` record; a resumed run keeps the records up to its checkpoint's step."""
        self.eta_from = None
        self.last_checkpoint = step if resumed else -1
        if self.rank == 0 and resumed:
            self.records = [r for r in read_metrics(self.plan.run_dir) if r.get("step", 0) <= step]
        self.record({"kind": "start", "step": step, "epoch": step // self.plan.steps_per_epoch,
                     "resumed_from": step if resumed else None, "world_size": world, "data": data,
                     "time": time.time()})
        where = f" (epoch {data['epoch']}, {data['clips_consumed']} of its clips consumed)" if data else ""
        self.say(f"{'resumed at step %d' % step if resumed else 'start'}{where} on {world} workers; "
                 f"{self.plan.total_steps} steps, {self.plan.steps_per_epoch}/epoch, "
                 f"accum {self.plan.accum if accum is None else accum}")

    def record_val(self, step: int, val: dict[str, float], *, train_loss: float) -> None:
        epoch = step // self.plan.steps_per_epoch
        self.record({"kind": "val", "step": step, "epoch": epoch, **val, "time": time.time()})
        self.say(f"step {step} epoch {epoch}: val_acc {val['val_acc']:.3f} loss {train_loss:.3f}")

    def run_counts(self, data: Any) -> dict[str, int] | None:
        """Clips decoded / consumed by the run so far (collective: every worker calls it)."""
        got = data.counts() if data is not None else None
        if got is None:
            return None
        return {"decoded": self.counts_before["decoded"] + got[0], "consumed": self.counts_before["consumed"] + got[1]}

    def report(self, step: int, metrics: dict[str, Any], *, checkpoint: bool, data: Any = None) -> None:
        """`ray.train.report` of `metrics` at `step`, with this worker's part of a checkpoint (the
        state, the run's data position and clip counts on rank 0)."""
        metrics = {**metrics, "step": step}
        if not checkpoint:
            ray.train.report(metrics)
            return
        counts = self.run_counts(data)
        if data is not None:
            data.written(step)
        with tempfile.TemporaryDirectory() as folder:
            state = None
            if self.rank == 0:
                position_now = position(step, layout_of(self.plan)) if counts is not None else None
                state = training_state(unwrap(self.net), self.optimizer, step=step,
                                       epoch=step // self.plan.steps_per_epoch, schedule=self.schedule,
                                       data=position_now, clips=counts)
            save_checkpoint_dir(folder, self.rank, state, rng_state(self.np_rng))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=checkpoint_name(step))
        self.last_checkpoint = step
        if self.rank == 0:
            write_metrics(self.plan.run_dir, self.records)

    def finish(self, step: int, clip: ClipConfig, data: Any = None) -> None:
        """Rank 0 at the end: metrics.jsonl, metrics.png, model.pt (our format; its meta holds the
        recipe of the run's clips `clip` and the labels: `pipeline.model.recipe`) and the clip
        counts in summary.json, in the run folder."""
        from pipeline import model as models

        counts = self.run_counts(data)
        if self.rank != 0:
            return
        run_dir = self.plan.run_dir
        end = {"kind": "end", "step": step, "time": time.time()}
        if counts is not None:
            end.update(clips_decoded=counts["decoded"], clips_consumed=counts["consumed"])
            summary_uri = storage.join(run_dir, "summary.json")
            summary = storage.read_json(summary_uri) if storage.exists(summary_uri) else {}
            storage.write_json(summary_uri, {**summary, "clips_decoded": counts["decoded"],
                                             "clips_consumed": counts["consumed"]})
            self.say(f"clips decoded {counts['decoded']}, consumed {counts['consumed']} "
                     f"({counts['decoded'] / max(counts['consumed'], 1):.2f} decoded per consumed)")
        self.records.append(end)
        write_metrics(run_dir, self.records)
        plot_metrics(self.records, storage.join(run_dir, "metrics.png"))
        model = unwrap(self.net)
        models.save(model, storage.join(run_dir, "model.pt"), step=step, labels=self.plan.labels,
                    recipe=make_recipe(clip, model.config, self.plan.labels))
        if self.trackers is not None:
            self.trackers.close()
        self.say(f"done at step {step}; model -> {storage.join(run_dir, 'model.pt')}")


def maybe_inject_failure(cfg: TrainJobConfig, plan: Plan, step: int, rank: int, world: int) -> None:
    """Testing hook (`loop.fail_once_at_step`): the last worker dies once, after a delay."""
    if cfg.loop.fail_once_at_step != step or rank != world - 1:
        return
    marker = storage.join(plan.run_dir, "fault_injected")
    if storage.exists(marker):
        return
    storage.write_bytes_atomic(marker, f"rank {rank} exits after step {step}\n".encode())
    console(f"[train] fault injection: rank {rank} exits in {cfg.loop.fail_delay_s}s")
    time.sleep(cfg.loop.fail_delay_s)
    os._exit(1)
