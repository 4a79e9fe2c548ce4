"""Ray Data clip datasets: manifest rows -> decoded uint8 clips (the only ray import in data/).

    rows = read_manifest("s3://bucket/train.csv")
    ds = build_clip_dataset(rows, DataConfig(num_frames=8, crop_size=224), mode="train", seed=0,
                            epochs=10, error_uri="s3://bucket/run/errors")

Pipeline: rows -> `ray.data.from_items` (one block per `batch_size` rows, shuffled per epoch
for train) -> `map_batches(_decode_batch, num_cpus=cfg.num_cpus, memory=cfg.memory)`; each row
becomes its clip views through the pure `rows.process_row` (open -> `clips.read_clips` -> one
row per view; columns in `pipeline.data.rows`).

Determinism: every random choice for a row comes from `clips.row_rng(seed, epoch, row)`; it does
not depend on batching, workers or order. Same seed and epoch -> the same clips and crops per
video; another epoch -> new ones.

Epochs: re-iterating one Dataset replays the same epoch. For new random clips every epoch either
build a dataset per epoch (`epoch=e`), or build one streaming dataset over several epochs
(`epochs=E`: E reshuffled passes over the rows, each with its own clips, tagged with `epoch`) and
iterate it once.

Errors: a bad row never raises. It is dropped from the clips and, when `error_uri` is given,
recorded there by the decode task as a part file of the error table (`pipeline.data.errors`).
Without `error_uri` failures are only logged.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import ray

from pipeline.data.clips import Mode
from pipeline.data.errors import write_errors
from pipeline.data.rows import DataConfig, process_row, views_to_batch

log = logging.getLogger(__name__)


def _decode_batch(batch: pa.Table, *, cfg: DataConfig, mode: str, seed: int,
                  error_uri: str | None) -> Iterator[dict[str, np.ndarray]]:
    """map_batches UDF: a batch of manifest rows -> a batch of clip views (bad rows dropped).

    A generator, so a batch whose rows all failed yields nothing (an empty numpy batch would
    not convert to the tensor column type).
    """
    views: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for row in batch.to_pylist():
        got, err = process_row(row, cfg, mode=mode, seed=seed, epoch=row["epoch"])
        views.extend(got)
        if err is not None:
            errors.append(err)
            log.warning("skipping %s (%s): %s", err["uri"], err["stage"], err["error"])
    if errors and error_uri:
        write_errors(error_uri, errors)
    if views:
        yield views_to_batch(views)


def _items(rows: Sequence[dict[str, Any]], mode: str, seed: int, epoch: int,
           epochs: int) -> list[dict[str, Any]]:
    """Manifest rows -> the plain items fed to Ray (shuffled per epoch for train)."""
    base = [{"path": str(r["path"]), "label": int(r.get("label", -1)),
             "video_id": str(r.get("video_id") or r["path"]),
             "start_sec": None if r.get("start_sec") is None else float(r["start_sec"]),
             "end_sec": None if r.get("end_sec") is None else float(r["end_sec"])} for r in rows]
    items = []
    for e in range(epoch, epoch + epochs):
        order = np.arange(len(base))
        if mode == "train":
            order = np.random.default_rng([int(seed) & 0xFFFFFFFF, e, 0x5EED]).permutation(len(base))
        items.extend({**base[i], "epoch": e} for i in order)
    return items


def build_clip_dataset(rows: Sequence[dict[str, Any]], cfg: DataConfig, *, mode: Mode, seed: int,
                       error_uri: str | None = None, epoch: int = 0, epochs: int = 1,
                       materialize: bool = False) -> "ray.data.Dataset":
    """Manifest rows -> a Ray Dataset of uint8 clip views (see the module docstring for columns).

    mode: "train" (random clip / jitter / crop / flip, rows shuffled per epoch) or "val" / "test"
    (uniform or cover clips x 1 or 3 crops). seed + epoch fix every random choice; `epochs` > 1
    chains that many epochs (each reshuffled, with new clips) into one streaming dataset.
    error_uri: folder for error part files (see `collect_errors`). materialize: decode now and
    keep the result in the object store (validation sets iterated every epoch).
    """
    if mode not in ("train", "val", "test"):
        raise ValueError(f"mode must be train, val or test, got {mode!r}")
    if mode == "train" and cfg.crop_size is None:
        raise ValueError("train mode needs crop_size")
    if epochs <= 0:
        raise ValueError("epochs must be >= 1")
    items = _items(rows, mode, seed, epoch, epochs)
    if not items:
        raise ValueError("no rows to build a dataset from")
    blocks = max(1, min(math.ceil(len(items) / cfg.batch_size), 10_000))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    fn = functools.partial(_decode_batch, cfg=cfg, mode=mode, seed=seed, error_uri=error_uri)
    remote_args: dict[str, Any] = {"num_cpus": cfg.num_cpus}
    if cfg.memory:
        remote_args["memory"] = cfg.memory
    ds = ds.map_batches(fn, batch_size=cfg.batch_size, batch_format="pyarrow", **remote_args)
    return ds.materialize() if materialize else ds


def progress_bars_on_terminal(stream=None) -> bool:
    """Ray Data's progress bars only when `stream` (stderr) is a terminal: redrawn bars fill a
    log file or `ray job logs`. Call on the driver before building datasets; returns the setting."""
    import sys

    on = bool((stream or sys.stderr).isatty())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = on
    ctx.enable_operator_progress_bars = on
    return on
