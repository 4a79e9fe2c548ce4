"""The model actor of Ray Data's pool: loads one model once and scores batches of clip rows.

`ClipScorer` is the callable class `Dataset.map_batches` runs in an actor pool
(`concurrency=(min, max)`, `num_gpus` per actor): each call gets `batch_size` clip rows of any
videos (the decode columns of `pipeline.infer.decode`) and returns them with `logits` float32
[B, V, C] (one per spatial view) in place of `frames`, plus the call's model seconds (`busy_s`, on its
first row) and which actor ran it (`actor`). Error rows pass through unscored.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import numpy as np


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


def _node_id() -> str:
    """The Ray node this actor runs on ("local" outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        return "local"


class ClipScorer:
    """Holds one model (loaded once, in the actor) and scores batches of clip rows."""

    def __init__(self, checkpoint: str, device: str = "auto", threads: int = 1, precision: str = "auto",
                 compile: bool = False, num_classes: int = 0, fail_after_calls: int | None = None,
                 fault_marker: str = "", min_call_s: float = 0.0):
        from pipeline.model.compile import compile_blocks

        self.model, self.device = load_model(checkpoint, device, threads)
        if compile:
            compile_blocks(self.model, self.device)  # eager (one warning) where the compiler cannot run
        self.precision = precision  # "auto": bf16 autocast on CUDA, fp32 on CPU
        self.num_classes = num_classes or int(self.model.config.num_classes)
        self.id = f"{_node_id()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"  # node:process:instance
        self.calls, self.fail_after_calls, self.fault_marker = 0, fail_after_calls, fault_marker
        self.min_call_s = min_call_s  # testing hook: a model slower than its decode (fake GPUs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch
        from einops import rearrange

        from pipeline.model.forward import clip_logits

        self._maybe_fail()
        t0 = time.perf_counter()
        frames = batch.pop("frames")
        ok = np.flatnonzero(np.asarray([not e for e in batch["error"]], bool))
        views = frames[0].shape[0] if len(frames) else 1
        logits = np.zeros((len(batch["video_id"]), views, self.num_classes), np.float32)  # [B, V, C]
        if len(ok):
            clips = np.stack([frames[i] for i in ok])  # [b, V, T, S, S, 3]
            x = torch.from_numpy(rearrange(clips, "b v t h w c -> (b v) t h w c"))
            with torch.inference_mode():
                out = clip_logits(self.model, x, precision=self.precision)  # [(b V), C]
            logits[ok] = rearrange(out.float(), "(b v) c -> b v c", v=views).cpu().numpy()  # [b, V, C]
        batch["logits"] = logits
        time.sleep(max(0.0, self.min_call_s - (time.perf_counter() - t0)))
        batch["busy_s"] = np.zeros(len(logits), np.float64)
        batch["busy_s"][:1] = time.perf_counter() - t0
        batch["actor"] = np.array([self.id] * len(logits), dtype=object)
        return batch

    def _maybe_fail(self) -> None:
        """Testing hook: exit the process once, at call `fail_after_calls` (a marker file records it)."""
        self.calls += 1
        if self.fail_after_calls is None or self.calls != self.fail_after_calls:
            return
        from pipeline import storage

        if not storage.exists(self.fault_marker):
            storage.write_bytes_atomic(self.fault_marker, b"model actor exited once\n")
            os._exit(1)
