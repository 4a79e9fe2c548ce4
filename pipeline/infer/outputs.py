"""Output rows, Parquet part files, the ids already done, and the merge into predictions (no Ray).

Rows are written in part files `parts/part-<hash of video ids>.parquet`, each atomically; a rerun
reads them to skip videos already `ok`, and `merge_parts` keeps exactly one row per input video.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import posixpath
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import aggregate as agg
from pipeline import storage
from pipeline.data.clips import ClipConfig
from pipeline.infer.config import CLIP_FLAGS, InferConfig, InferResult
from pipeline.model.recipe import CLIP_FIELDS

PARTS_DIR = "parts"
PLOTS_DIR = "plots"
MARKER = "_infer.json"  # the run's settings: a rerun with the same ones resumes
OWNED = (PARTS_DIR, PLOTS_DIR, MARKER, "predictions.parquet", "predictions.jsonl", "errors.parquet",
         "summary.json")  # what --overwrite removes
RESULT_FIELDS = ("aggregate", "top_k", "labels")  # settings that change the rows, with `clip`'s CLIP_FIELDS
# The flag of each key of the marker (`run_settings`) whose flag is not `--<key>`.
MARKER_FLAGS = {k: CLIP_FLAGS + k.replace("_", "-") for k in CLIP_FIELDS}


def failed_row(video_id: str, error: dict[str, str], target: str | None = None) -> dict[str, Any]:
    """The output row of a video that could not be classified: its error row
    (`pipeline.data.errors.error_row`: uri, stage, error) with the video's id and target."""
    return {"video_id": video_id, "status": "error", "target": target, "duration": None, "fps": None,
            "num_clips": 0, "num_padded": 0, "label": None, "label_id": None, "score": None, "top_labels": [],
            "top_ids": [], "top_scores": [], "timeline": [], "truncated": None, **error}


def prediction_row(item: dict[str, Any], meta: dict[str, Any], clip_logits: np.ndarray,
                   names: Sequence[str], method: str, k: int) -> dict[str, Any]:
    """The output row of a classified video from its logits `[K, C]`, or `[K, V, C]` with V
    spatial views per clip: the video score aggregates every view (clips x crops, the multi-view
    protocol), the timeline shows each clip's view-averaged logits."""
    views = clip_logits.reshape(-1, clip_logits.shape[-1])  # [K V, C]
    if clip_logits.ndim == 3:
        clip_logits = clip_logits.mean(axis=1)  # [K, C]
    scores = agg.aggregate(views, method)
    top = agg.top_k(scores, k, names)
    return {
        "video_id": item["video_id"], "uri": item["uri"], "status": "ok", "stage": None, "error": None,
        "target": item.get("target"), "duration": meta["duration"], "fps": meta["fps"],
        "num_clips": int(clip_logits.shape[0]), "num_padded": int(meta["num_padded"]),
        "label": top[0][1], "label_id": top[0][0], "score": top[0][2],
        "top_labels": [n for _, n, _ in top], "top_ids": [i for i, _, _ in top],
        "top_scores": [s for _, _, s in top],
        "timeline": agg.timeline(meta["starts"], meta["ends"], clip_logits),
        "truncated": bool(meta.get("truncated", False)),
    }


SCHEMA = pa.schema([
    ("video_id", pa.string()), ("uri", pa.string()), ("status", pa.string()),
    ("stage", pa.string()), ("error", pa.string()), ("target", pa.string()),
    ("duration", pa.float64()), ("fps", pa.float64()), ("num_clips", pa.int32()),
    ("num_padded", pa.int32()), ("label", pa.string()), ("label_id", pa.int32()),
    ("score", pa.float32()), ("top_labels", pa.list_(pa.string())),
    ("top_ids", pa.list_(pa.int32())), ("top_scores", pa.list_(pa.float32())),
    ("timeline", pa.list_(pa.struct([("start_sec", pa.float64()), ("end_sec", pa.float64()),
                                     ("scores", pa.list_(pa.float32()))]))),
    ("truncated", pa.bool_()),  # the file ends early: the prediction covers the frames before the cut
])


def _conform(table: pa.Table) -> pa.Table:
    """A part file's table in `SCHEMA` (columns added since it was written are null)."""
    for name in SCHEMA.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, SCHEMA.field(name).type))
    return table.select(SCHEMA.names).cast(SCHEMA)


def part_name(video_ids: Sequence[str]) -> str:
    """`part-<16 hex of sha1 over the sorted ids>.parquet`: the same videos give the same name."""
    h = hashlib.sha1("\n".join(sorted(video_ids)).encode("utf-8")).hexdigest()[:16]
    return f"part-{h}.parquet"


def write_part(output: str, rows: list[dict[str, Any]]) -> str:
    """Write rows as one Parquet part file, atomically; returns its URI."""
    uri = storage.join(output, PARTS_DIR, part_name([r["video_id"] for r in rows]))
    storage.write_parquet_atomic(uri, pa.Table.from_pylist(rows, schema=SCHEMA))
    return uri


def list_parts(output: str) -> list[str]:
    """Finished part files (temporary names of unfinished writes are ignored)."""
    return [u for u in storage.list_files(storage.join(output, PARTS_DIR), [".parquet"])
            if posixpath.basename(u).startswith("part-")]


def done_video_ids(output: str) -> set[str]:
    """Ids of videos with an `ok` row in an existing part file (errors are retried)."""
    done: set[str] = set()
    for uri in list_parts(output):
        t = storage.read_parquet(uri, columns=["video_id", "status"])
        for vid, status in zip(t.column("video_id").to_pylist(), t.column("status").to_pylist()):
            if status == "ok":
                done.add(vid)
    return done


def _choose_rows(parts: list[str], wanted: set[str]) -> dict[str, list[int]]:
    """For each wanted video one row `{part uri: [row numbers]}`: its first `ok` row if any,
    else its last error row (a rerun retries errors; a success wins over any failure)."""
    best: dict[str, tuple[bool, int, int]] = {}  # video_id -> (is ok, part index, row)
    for p, uri in enumerate(parts):
        t = storage.read_parquet(uri, columns=["video_id", "status"])
        for r, (vid, status) in enumerate(zip(t.column("video_id").to_pylist(),
                                              t.column("status").to_pylist())):
            if vid not in wanted or (vid in best and best[vid][0]):
                continue
            best[vid] = (status == "ok", p, r)
    chosen: dict[str, list[int]] = {}
    for _, p, r in sorted(best.values(), key=lambda b: (b[1], b[2])):
        chosen.setdefault(parts[p], []).append(r)
    return chosen


def merge_parts(output: str, video_ids: Sequence[str], *, jsonl: bool = False) -> dict[str, int]:
    """Merge the part files into `predictions.parquet`: exactly one row per id in `video_ids`
    that has a row in some part (see `_choose_rows`), plus `errors.parquet` (uri, stage, error)
    and, with `jsonl`, `predictions.jsonl`. Streams one part at a time. Returns counts (rows,
    ok, errors, and with_target / correct: rows whose manifest label is known / equals top-1)."""
    chosen = _choose_rows(list_parts(output), set(video_ids))
    counts = {"rows": 0, "ok": 0, "errors": 0, "with_target": 0, "correct": 0, "clips": 0}
    errors: list[pa.Table] = []
    with contextlib.ExitStack() as stack:
        pf = stack.enter_context(storage.open_atomic(storage.join(output, "predictions.parquet")))
        jf = stack.enter_context(storage.open_atomic(storage.join(output, "predictions.jsonl"))) if jsonl else None
        writer = stack.enter_context(pq.ParquetWriter(pf, SCHEMA))
        for uri, rows in chosen.items():
            t = _conform(storage.read_parquet(uri))
            t = t.take(pa.array(rows, pa.int64()))
            writer.write_table(t)
            if jf is not None:
                for row in t.to_pylist():
                    jf.write((json.dumps(row) + "\n").encode("utf-8"))
            labels, targets = t.column("label").to_pylist(), t.column("target").to_pylist()
            counts["with_target"] += sum(x is not None for x in targets)
            counts["correct"] += sum(x is not None and x == y for x, y in zip(targets, labels))
            bad = t.filter(pa.compute.equal(t.column("status"), "error"))
            errors.append(bad.select(["uri", "stage", "error"]))
            counts["rows"] += t.num_rows
            counts["clips"] += int(pa.compute.sum(t.column("num_clips")).as_py() or 0)
            counts["errors"] += bad.num_rows
    counts["ok"] = counts["rows"] - counts["errors"]
    err_uri = storage.join(output, "errors.parquet")
    if counts["errors"]:
        storage.write_parquet_atomic(err_uri, pa.concat_tables(errors))
    else:
        storage.remove(err_uri)
    return counts


def plot_uri(output: str, video_id: str) -> str:
    """Where the timeline PNG of a video goes: `plots/<id>.png` for a plain id (ids with `/` keep
    their folders); any other id is sanitised (`storage.safe_relpath`) and the result is proven to
    be inside `output/plots`, whatever the id (`..`, absolute paths, odd characters)."""
    return storage.join_inside(storage.join(output, PLOTS_DIR), storage.safe_relpath(video_id, ".png"))


def run_settings(checkpoint: str, videos: str, cfg: InferConfig, howto100m_template: str = "") -> dict[str, Any]:
    """What makes two runs into one output folder the same run (the marker `_infer.json` records
    it for `pipeline.guard.claim_output`): the inputs and the settings that change the rows, not
    the throughput settings, which a rerun may change. The clip fields are top-level keys
    (`MARKER_FLAGS` names their flags)."""
    return {"checkpoint": checkpoint, "videos": videos, "howto100m_template": howto100m_template,
            **{k: getattr(cfg.clip, k) for k in CLIP_FIELDS}, **{k: getattr(cfg, k) for k in RESULT_FIELDS}}


def write_summary(checkpoint: str, cfg: InferConfig, spec: ClipConfig, info: dict[str, Any],
                  result: InferResult, recipe: dict[str, Any] | None = None) -> None:
    """`summary.json`: the settings (InferConfig with its `clip` section, ClipConfig), the
    checkpoint's recipe and what differed from it (`recipe`: checkpoint, used, overrides,
    warnings), the model and pool facts, the counts of the whole output folder (`counts`,
    `clips`, `top1`: a rerun that skips everything keeps them) and this run's share (`this_run`)."""
    storage.write_json(storage.join(result.output, "summary.json"), {
        "checkpoint": checkpoint, "config": dataclasses.asdict(cfg), "clip_spec": dataclasses.asdict(spec),
        "recipe": recipe,
        "model": info,
        # the whole output folder (every run that wrote into it) ...
        "counts": {"videos": result.total, "ok": result.ok, "errors": result.errors}, "top1": result.top1,
        "clips": result.clips_total,
        # ... and this run's share
        "this_run": {"processed": result.processed, "skipped": result.skipped, "clips": result.clips,
                     "wall_s": result.wall_s, "decode_s": result.decode_s, "model_busy_s": result.model_busy_s,
                     "actor_idle": result.actor_idle, "actors_seen": result.actors_seen,
                     "model_nodes": result.model_nodes},
    })
