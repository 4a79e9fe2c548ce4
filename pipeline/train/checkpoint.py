"""Checkpoint state of a training run (no Ray: a checkpoint is a folder here).

A checkpoint folder holds `state.pt` (rank 0: model, optimizer, schedule position, step, epoch)
and `rng_<rank>.pt` (every worker's RNG streams). Ray Train stores it as
`<run folder>/checkpoint_<step, 8 digits>/` and keeps the last `loop.keep_checkpoints`.
Everything is loaded with `weights_only=True`.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import storage


# ----------------------------------------------------------------------------------- RNG streams


def seed_worker(seed: int, rank: int) -> np.random.Generator:
    """Seed torch and `random` for worker `rank`; returns its numpy generator (mixup)."""
    torch.manual_seed(seed * 1000 + rank)
    random.seed(seed * 1000 + rank)
    return np.random.default_rng([seed, rank])


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


# ----------------------------------------------------------------------------------- state


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, *, step: int, epoch: int,
                   schedule: dict[str, Any], data: dict[str, Any] | None = None,
                   clips: dict[str, int] | None = None) -> dict[str, Any]:
    """What `state.pt` of a checkpoint holds; `model` is the unwrapped (non-DDP) module. `data`:
    the run's data position (`pipeline.data.position.position`: epoch, seed, clips and rows of
    the epoch's order consumed); `clips`: clips decoded / consumed by the run so far."""
    return {
        "data": data,
        "clips": clips,
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


def restore(checkpoint: Any, rank: int, model: nn.Module, optimizer: torch.optim.Optimizer,
            np_rng: np.random.Generator) -> tuple[int, dict[str, Any]]:
    """Load a Ray Train checkpoint into model, optimizer and this worker's RNGs (a rank the
    checkpoint's world did not have keeps its fresh seed); returns (its step, {"data": the data
    position, "clips": the clip counts}, either None in older checkpoints)."""
    with checkpoint.as_directory() as folder:
        state, rngs = load_checkpoint_dir(folder, rank)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if rngs is not None:
        set_rng_state(rngs, np_rng)
    return int(state["step"]), {"data": state.get("data"), "clips": state.get("clips")}


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint taken at `step`, as Ray Train stores it in the run folder."""
    return f"checkpoint_{step:08d}"


def step_of(name: str) -> int | None:
    """The step of a `checkpoint_<step>` folder name (None for any other name)."""
    base = name.rstrip("/").rsplit("/", 1)[-1]  # a listed path or a bare name
    digits = base[len("checkpoint_"):]
    return int(digits) if base.startswith("checkpoint_") and digits.isdigit() else None


def checkpoint_steps(run_dir: str) -> list[int]:
    """The steps of the `checkpoint_<step>` folders of a run, sorted (none when the run has none)."""
    fs, path = storage.filesystem(run_dir)
    if not fs.exists(path):
        return []
    return sorted(s for s in map(step_of, fs.ls(path, detail=False)) if s is not None)


def latest_checkpoint_step(run_dir: str) -> int | None:
    """The highest step among `checkpoint_<step>` folders of a run (None when there are none)."""
    steps = checkpoint_steps(run_dir)
    return steps[-1] if steps else None


def orphan_steps(steps: list[int], kept: list[int]) -> list[int]:
    """Checkpoint steps on storage that Ray Train no longer tracks: those below the oldest one it
    keeps. Ray Train records its new list of checkpoints before it deletes the one that fell off,
    so a driver killed in between leaves that one behind, and no later run deletes it."""
    return [s for s in steps if kept and s < min(kept)]


def remove_orphan_checkpoints(run_dir: str, kept: list[str]) -> list[str]:
    """Delete the checkpoint folders of `run_dir` that `orphan_steps` names, given the paths or names
    of the checkpoints Ray Train keeps (only folders this project writes: `checkpoint_<8 digits>`
    holding a `state.pt`); returns their names."""
    removed = []
    kept_steps = [s for s in map(step_of, kept) if s is not None]
    for step in orphan_steps(checkpoint_steps(run_dir), kept_steps):
        folder = storage.join(run_dir, checkpoint_name(step))
        if storage.exists(storage.join(folder, "state.pt")):
            storage.remove(folder, recursive=True)
            removed.append(checkpoint_name(step))
    return removed
