"""Training metrics: `metrics.jsonl` of a run, and the running window between two logged steps.

Records (one JSON object a line, keys sorted), each with `kind`, `step` and `time`:
    start   epoch, resumed_from (None or the checkpoint step), world_size
    train   epoch (fractional), loss, acc, lr, clips_per_s, data_wait_frac, step_time_s, peak_mem_mb,
            decode_work (frames decoded per frame kept by this worker's clips; None when unknown)
            (rank 0 prints each as one `progress_line` and rewrites the file: it is current at every
            log interval)
    val     epoch, val_loss, val_acc, val_clips
    end
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from typing import Any

import torch

from pipeline import storage
from pipeline.progress import format_duration


@dataclass
class Window:
    """Running sums over the optimizer steps since the last logged step. `loss_sum` and `correct`
    may be device tensors (`train_step` leaves them there): they are summed on the device and
    read once, in `metrics`, so only logged steps wait for the device."""

    loss_sum: Any = 0.0
    correct: Any = 0.0
    clips: int = 0
    wait_s: float = 0.0
    time_s: float = 0.0
    steps: int = 0
    decoded: int = 0  # frames the decoders produced for this window's clips
    kept: int = 0  # frames kept (converted) for them

    def add(self, step_out: dict[str, float], seconds: float) -> None:
        """Count one step: `step_out` of `train_step` (loss_sum, correct, clips, wait_s), `seconds` it took."""
        self.time_s += seconds
        self.loss_sum += step_out["loss_sum"]
        self.correct += step_out["correct"]
        self.clips += step_out["clips"]
        self.wait_s += step_out["wait_s"]
        self.decoded += step_out.get("decoded_frames", 0)
        self.kept += step_out.get("kept_frames", 0)
        self.steps += 1

    def metrics(self, *, step: int, steps_per_epoch: int, lr: float, world: int,
                device: torch.device) -> dict[str, Any]:
        """The `train` record: loss, acc, lr, clips/s (all workers), fraction of step time spent
        waiting for data, mean step time, peak device memory."""
        clips, secs = max(self.clips, 1), max(self.time_s, 1e-9)
        loss_sum, correct = float(self.loss_sum), float(self.correct)  # the one host read of the window
        return {
            "kind": "train", "step": step, "epoch": step / steps_per_epoch,
            "loss": loss_sum / clips, "acc": correct / clips, "lr": lr,
            "clips_per_s": self.clips * world / secs,
            "data_wait_frac": self.wait_s / secs,
            "step_time_s": secs / max(self.steps, 1),
            "peak_mem_mb": peak_memory_mb(device), "time": time.time(),
            "decode_work": self.decoded / self.kept if self.kept else None,
        }


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory of this process: CUDA allocator peak, or the process max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def progress_line(record: dict[str, Any], total_steps: int, eta_s: float | None) -> str:
    """One console line of a `train` record: step/total, loss, acc, lr, clips/s, decode work (frames
    decoded per frame kept), data wait, ETA."""
    r = record
    return (f"step {r['step']}/{total_steps} epoch {r['epoch']:.2f}: loss {r['loss']:.4f} acc {r['acc']:.3f} "
            f"lr {r['lr']:.3g} {r['clips_per_s']:.1f} clips/s "
            + (f"decode {r['decode_work']:.1f}x " if r.get("decode_work") is not None else "")
            + f"data-wait {r['data_wait_frac']:.0%} ETA {format_duration(eta_s)}")


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
