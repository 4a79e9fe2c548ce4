"""Ray Data clip datasets: manifest rows -> decoded uint8 clips (the only ray import in data/).

    rows = read_manifest("s3://bucket/train.csv")
    ds = build_clip_dataset(rows, DecodeConfig(num_frames=8, crop_size=224), mode="train", seed=0,
                            epochs=10, error_uri="s3://bucket/run/errors")

Pipeline: the manifest goes into the object store once as an Arrow table; the dataset starts
from work-unit ids (`ray.data.range`: each unit is a range of positions in one epoch's row
order, at most `UNITS_PER_EPOCH` per epoch), so the driver's cost is O(rows) whatever the number
of epochs. A `flat_map` turns each unit into its rows (the epoch's order is a seeded permutation for train,
computed inside the task), then `map_batches(_decode_batch, num_cpus=cfg.num_cpus,
memory=cfg.memory)` turns each row into its clip views through the pure `rows.process_row`
(open -> `clips.read_clips` -> one row per view; columns in `pipeline.data.rows`).

Determinism: every random choice for a row comes from `clips.row_rng(seed, epoch, row)`; it does
not depend on batching, workers or order. Same seed and epoch -> the same clips and crops per
video; another epoch -> new ones.

Epochs: re-iterating one Dataset replays the same epoch. For new random clips every epoch either
build a dataset per epoch (`epoch=e`), or build one streaming dataset over several epochs
(`epochs=E`: E reshuffled passes over the rows, each with its own clips, tagged with `epoch`) and
iterate it once.

Training streams: `build_position_stream` is one worker's train clips from a step of the run on
(`pipeline.data.position`: each step's clips are a fixed slice of the epoch's order), built from
step ids the same O(1) way, so a resumed run reads only the rows it has not consumed.

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
from pipeline.data.position import Layout, epoch_order, step_spans
from pipeline.data.rows import DecodeConfig, manifest_table, process_row, views_to_batch

log = logging.getLogger(__name__)


def _decode_batch(batch: pa.Table, *, cfg: DecodeConfig, mode: str, seed: int,
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


def unit_size(num_rows: int, batch_size: int) -> int:
    """Rows per work unit: a multiple of `batch_size`, at most `UNITS_PER_EPOCH` units per epoch."""
    return batch_size * max(1, math.ceil(num_rows / (batch_size * UNITS_PER_EPOCH)))


UNITS_PER_EPOCH = 1000


_TABLES: dict[str, pa.Table] = {}  # object ref hex -> the manifest table, one fetch per process


def _table(ref: Any) -> pa.Table:
    key = ref.hex()
    if key not in _TABLES:
        _TABLES.clear()
        _TABLES[key] = ray.get(ref)
    return _TABLES[key]


def _expand(unit: dict[str, Any], *, table_ref: list[Any], first_epoch: int, unit_size: int, mode: str,
            seed: int) -> list[dict[str, Any]]:
    """flat_map UDF: work unit `id` -> its manifest rows (positions [lo, hi) of its epoch's order),
    tagged with the epoch."""
    table = _table(table_ref[0])
    epoch, lo, hi = unit_span(int(unit["id"]), table.num_rows, unit_size, first_epoch)
    order = epoch_order(seed, epoch, table.num_rows, mode == "train")
    rows = table.take(pa.array(order[lo:hi])).to_pylist()
    return [{**r, "epoch": epoch} for r in rows]


def unit_span(unit_id: int, num_rows: int, unit_size: int, first_epoch: int = 0) -> tuple[int, int, int]:
    """(epoch, lo, hi): the positions of its epoch's row order that work unit `unit_id` holds."""
    per_epoch = math.ceil(num_rows / unit_size)
    lo = (unit_id % per_epoch) * unit_size
    return first_epoch + unit_id // per_epoch, lo, min(lo + unit_size, num_rows)


def build_clip_dataset(rows: Sequence[dict[str, Any]], cfg: DecodeConfig, *, mode: Mode, seed: int,
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
    if not rows:
        raise ValueError("no rows to build a dataset from")
    size = unit_size(len(rows), cfg.batch_size)
    units = epochs * math.ceil(len(rows) / size)
    table_ref = ray.put(manifest_table(rows))  # once; the tasks derive each epoch's order and clips
    ds = ray.data.range(units, override_num_blocks=min(units, 10_000))  # unit ids, made by read tasks
    ds = ds.flat_map(_expand, fn_kwargs={"table_ref": [table_ref], "first_epoch": epoch, "unit_size": size,
                                         "mode": mode, "seed": seed})
    fn = functools.partial(_decode_batch, cfg=cfg, mode=mode, seed=seed, error_uri=error_uri)
    remote_args: dict[str, Any] = {"num_cpus": cfg.num_cpus}
    if cfg.memory:
        remote_args["memory"] = cfg.memory
    ds = ds.map_batches(fn, batch_size=cfg.batch_size, batch_format="pyarrow", **remote_args)
    return ds.materialize() if materialize else ds


def _step_rows(unit: dict[str, Any], *, table_ref: list[Any], layout: Layout, first_step: int, rank: int,
               world: int) -> list[dict[str, Any]]:
    """flat_map UDF: optimizer step `id` -> the manifest rows worker `rank` of `world` decodes for
    it, each with its span of clips (`pipeline.data.position.step_spans`)."""
    table = _table(table_ref[0])
    spans = step_spans(first_step + int(unit["id"]), rank, world, layout)
    rows = table.take(pa.array([s["row"] for s in spans], pa.int64())).to_pylist()
    return [{**r, **s} for r, s in zip(rows, spans)]


def _decode_spans(batch: pa.Table, *, cfg: DecodeConfig, seed: int,
                  error_uri: str | None) -> Iterator[dict[str, np.ndarray]]:
    """map_batches UDF of a position stream: rows -> their clips inside [clip_lo, clip_hi), tagged
    with the step; `views_decoded` (on the first kept view of each row) counts every clip the
    row's decode made, kept or not, and the row's decode work goes on that view too."""
    views: list[dict[str, Any]] = []
    steps: list[int] = []
    decoded: list[int] = []
    errors: list[dict[str, str]] = []
    for row in batch.to_pylist():
        got, err = process_row(row, cfg, mode="train", seed=seed, epoch=row["epoch"])
        if err is not None:
            errors.append(err)
            log.warning("skipping %s (%s): %s", err["uri"], err["stage"], err["error"])
        kept = [v for v in got if row["clip_lo"] <= v["clip_index"] < row["clip_hi"]]
        if kept:
            kept = [dict(v) for v in kept]
            work = (sum(v["decoded_frames"] for v in got), sum(v["kept_frames"] for v in got))
            for i, v in enumerate(kept):
                v["decoded_frames"], v["kept_frames"] = work if i == 0 else (0, 0)
            views.extend(kept)
            steps.extend([row["step"]] * len(kept))
            decoded.extend([len(got)] + [0] * (len(kept) - 1))
    if errors and error_uri:
        write_errors(error_uri, errors)
    if views:
        out = views_to_batch(views)
        out["step"] = np.array(steps, dtype=np.int64)
        out["views_decoded"] = np.array(decoded, dtype=np.int64)
        yield out


def build_position_stream(table_ref: Any, cfg: DecodeConfig, *, layout: Layout, start_step: int, end_step: int,
                          rank: int, world: int, error_uri: str | None = None) -> "ray.data.Dataset":
    """The train clips worker `rank` of `world` consumes in steps [start_step, end_step), in order.

    `table_ref`: the object ref of the train split's `manifest_table`. Only the rows of those
    steps' slices are read and decoded (`pipeline.data.position`): a run resumed at a step decodes
    nothing it consumed before. Columns: those of a train dataset plus `step` and `views_decoded`.
    The order is kept (`preserve_order`), so the worker's clips come step by step.
    """
    if cfg.crop_size is None:
        raise ValueError("train mode needs crop_size")
    if end_step <= start_step:
        raise ValueError("no steps left to stream")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # this worker's steps in order
    steps = end_step - start_step
    ds = ray.data.range(steps, override_num_blocks=min(steps, 10_000))
    ds = ds.flat_map(_step_rows, fn_kwargs={"table_ref": [table_ref], "layout": layout, "first_step": start_step,
                                            "rank": rank, "world": world})
    fn = functools.partial(_decode_spans, cfg=cfg, seed=layout.seed, error_uri=error_uri)
    remote_args: dict[str, Any] = {"num_cpus": cfg.num_cpus}
    if cfg.memory:
        remote_args["memory"] = cfg.memory
    return ds.map_batches(fn, batch_size=cfg.batch_size, batch_format="pyarrow", **remote_args)


def progress_bars_on_terminal(stream=None) -> bool:
    """Ray Data's progress bars only when `stream` (stderr) is a terminal: redrawn bars fill a
    log file or `ray job logs`. Call on the driver before building datasets; returns the setting."""
    import sys

    on = bool((stream or sys.stderr).isatty())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = on
    ctx.enable_operator_progress_bars = on
    return on
