"""The model actor: loads one model once and scores batches of clips straight from the object store."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import ray

from pipeline.infer.config import InferConfig


def load_model(checkpoint: str, device: str, threads: int) -> tuple[Any, Any]:
    """(model in eval mode, torch device) for a model actor: "auto" is CUDA when present; a CPU
    actor uses `threads` torch threads."""
    import torch

    from pipeline.model import load

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(max(1, threads))
    return load(checkpoint).to(torch.device(device)), torch.device(device)


@ray.remote
class ClipScorer:
    """Holds one model (loaded once) and scores batches of clips from the object store."""

    def __init__(self, checkpoint: str, device: str = "auto", threads: int = 1,
                 precision: str = "fp32", fail_after_calls: int | None = None, fault_marker: str = "",
                 compile: bool = False):
        from pipeline.model.compile import compile_blocks

        self.model, self.device = load_model(checkpoint, device, threads)
        if compile:
            compile_blocks(self.model, self.device)  # eager (one warning) where the compiler cannot run
        self.precision = precision  # "fp32": no autocast; "bf16" / "fp16": autocast on CUDA
        self.calls, self.fail_after_calls, self.fault_marker = 0, fail_after_calls, fault_marker

    def info(self) -> dict[str, Any]:
        """The model facts the driver needs (classes, frames, image size, device)."""
        cfg = self.model.config
        return {"num_classes": int(cfg.num_classes), "num_frames": int(getattr(cfg, "num_frames", 8)),
                "image_size": int(getattr(cfg, "image_size", 224)), "family": self.model.family,
                "device": str(self.device)}

    def score(self, parts: list[tuple[Any, list[int]]]) -> tuple[np.ndarray, float]:
        """Clip logits `[B, C]` (float32, crop logits averaged) for `[(clips_ref, clip_indices), ...]`;
        busy seconds."""
        import torch
        from einops import rearrange

        from pipeline.model.forward import clip_logits

        self._maybe_fail()
        t0 = time.perf_counter()
        arrays = ray.get([ref for ref, _ in parts])
        clips = np.concatenate([a[idx] for a, (_, idx) in zip(arrays, parts)])  # [B, V, T, S, S, 3]
        views = clips.shape[1]
        x = torch.from_numpy(rearrange(clips, "b v t h w c -> (b v) t h w c"))
        with torch.inference_mode():
            logits = clip_logits(self.model, x, precision=self.precision)  # [(B V), C]
        logits = rearrange(logits.float(), "(b v) c -> b v c", v=views).mean(dim=1)  # [B, C]
        out = logits.cpu().numpy().astype(np.float32)
        return out, time.perf_counter() - t0


    def _maybe_fail(self) -> None:
        """Testing hook: exit the process once, at call `fail_after_calls` (a marker file records it)."""
        self.calls += 1
        if self.fail_after_calls is None or self.calls != self.fail_after_calls:
            return
        from pipeline import storage

        if not storage.exists(self.fault_marker):
            storage.write_bytes_atomic(self.fault_marker, b"model actor exited once\n")
            os._exit(1)


def make_actors(checkpoint: str, cfg: InferConfig, device: str = "auto", fault_marker: str = "") -> list[Any]:
    """Start the model actors (one per GPU by default, else one CPU actor)."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    per_actor = cfg.actor_gpus if cfg.actor_gpus is not None else (1.0 if gpus and device != "cpu" else 0.0)
    n = cfg.actors or (max(1, int(gpus // per_actor)) if per_actor else 1)
    threads = cfg.torch_threads or max(1, int(cfg.actor_cpus))
    dev = device if device != "auto" else ("cuda" if per_actor else "cpu")
    return [ClipScorer.options(num_cpus=cfg.actor_cpus, num_gpus=per_actor, max_restarts=cfg.actor_restarts,
                               max_task_retries=0).remote(  # the scheduler re-sends failed calls itself
        checkpoint, dev, threads, cfg.precision, cfg.fail_actor_after_calls if i == 0 else None, fault_marker,
        cfg.compile)
        for i in range(n)]
