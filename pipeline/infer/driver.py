"""`run_inference`: the videos as a Ray Data dataset -> decode tasks -> a model actor pool -> rows.

    ds = ray.data.from_items(videos)                                  # video_id, uri, segment
         .map_batches(decode_videos, num_cpus=decode_num_cpus)       # clip rows, a seek pass per block
         .map_batches(ClipScorer, concurrency=(min, max), num_gpus=g, batch_size=B)   # + logits
    for block in ds.iter_batches(): Collector.add(block) -> rows -> parts/*.parquet

The driver only aggregates: each block of scored clips goes into the `Collector`, and a video's
row is written (in a part file of `part_size` rows) as soon as all its clips are in. Ray Data's
streaming executor does the rest: backpressure on the object store (a long video's clips stream
through in blocks of `clip.clips_per_decode`), batches of `batch_size` clips across videos, an actor
pool that starts `min_actors` and grows onto GPU nodes as the autoscaler adds them, restarts of
lost actors and retries of lost tasks (see docs/RAY.md, "Inference").
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any

import numpy as np
import ray

from pipeline import outage, storage
from pipeline.data.clips import ClipConfig
from pipeline.infer.actor import ClipScorer
from pipeline.data.errors import error_text
from pipeline.infer.collect import MODEL, Collector
from pipeline.infer.config import InferConfig, InferPlan, InferResult, clip_config, plan_inference
from pipeline.infer.decode import decode_videos
from pipeline.infer.inputs import list_videos, read_label_names
from pipeline.infer.outputs import done_video_ids, merge_parts, plot_uri, write_part, write_summary
from pipeline.infer.pool import Pool, gpu_capacity, plan_pool
from pipeline.infer.progress import Progress

MAX_BLOCKS = 20_000  # input blocks of the video list (a decode task per block)
ITEM_FIELDS = ("video_id", "uri", "start_sec", "end_sec")  # what a decode task gets of an input video


def scored_clips(items: list[dict[str, Any]], spec: ClipConfig, cfg: InferConfig, checkpoint: str,
                 pool: Pool, num_classes: int, fault_marker: str = "", gate: Any = None) -> Any:
    """The Ray Data dataset of scored clip rows for `items` (lazy: nothing runs until iterated)."""
    blocks = max(1, min(MAX_BLOCKS, math.ceil(len(items) / cfg.videos_per_task)))
    ds = _set_context(ray.data.from_items([{k: it.get(k) for k in ITEM_FIELDS} for it in items],
                                          override_num_blocks=blocks), cfg)
    # The decode tasks reserve `decode_memory` (a real reservation, and remote args unlike the
    # actors', so that Ray Data never fuses decoding into the model actors).
    ds = ds.map_batches(decode_videos, fn_kwargs={"spec": spec, "gate": gate, "block_bytes": cfg.block_mb * 2**20}, batch_size=cfg.videos_per_task,
                        batch_format="pyarrow", num_cpus=cfg.decode_num_cpus, memory=cfg.decode_memory_mb * 2**20)
    threads = cfg.torch_threads or max(1, int(cfg.actor_cpus))
    with warnings.catch_warnings():  # max_restarts has no named parameter in 2.60 (docs/RAY.md, "Inference")
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            ClipScorer, batch_size=cfg.batch_size, batch_format="numpy", zero_copy_batch=True,
            compute=ray.data.ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
            num_gpus=pool.num_gpus, num_cpus=cfg.actor_cpus, max_restarts=cfg.actor_restarts,
            fn_constructor_kwargs={"checkpoint": checkpoint, "device": pool.device, "threads": threads,
                                   "precision": cfg.precision, "compile": cfg.compile, "num_classes": num_classes,
                                   "fail_after_calls": cfg.fail_actor_after_calls, "fault_marker": fault_marker,
                                   "min_call_s": cfg.min_model_call_s})


def run_inference(checkpoint: str, videos: str | list[dict[str, Any]], output: str,
                  cfg: InferConfig | None = None, *, device: str = "auto", howto100m_template: str | None = None,
                  plan: InferPlan | None = None) -> InferResult:
    """Classify every video (a manifest/folder URI or items `{video_id, uri, target}`).

    Writes parts, then `predictions.parquet` etc. under `output` (see `pipeline.infer`). Videos
    that already have an `ok` row under `output` are skipped. Clip settings come from the
    checkpoint's recipe under `cfg` (`plan_inference`; `plan` passes one already made).
    """
    from pipeline.data.manifest import LABELS_FILE, LabelMap, write_labels

    cfg = cfg or InferConfig()
    if plan is None:
        plan = plan_inference(checkpoint, cfg)
        for warning in plan.warnings:
            logging.getLogger(__name__).warning(warning)
    t_start = time.perf_counter()
    items, bad_rows = list_videos(videos, howto100m_template) if isinstance(videos, str) else (
        [dict(v) for v in videos], [])
    done = done_video_ids(output)
    todo = [it for it in items if it["video_id"] not in done]
    result = InferResult(output=output, predictions=storage.join(output, "predictions.parquet"),
                         total=len(items) + len(bad_rows), skipped=len(items) - len(todo))
    num_classes = int(plan.model_config["num_classes"])
    names = read_label_names(cfg.labels, checkpoint, num_classes, recorded=plan.recipe.get("labels"))
    spec = clip_config(cfg, plan.resolved.values)
    write_labels(storage.join(output, LABELS_FILE), LabelMap(tuple(names)))
    pool = plan_pool(cfg, device, *gpu_capacity(cfg.autoscaler_config))
    result.gpus_now, result.gpus_max, result.num_gpus, result.max_actors = (
        pool.gpus_now, pool.gpus_max, pool.num_gpus, pool.max_actors)

    writer = _Rows(cfg, output, names, result, {it["video_id"]: it for it in todo})
    writer.add(bad_rows)
    progress = Progress(output, len(todo) + len(bad_rows), result.skipped)
    busy: dict[str, float] = {}
    if todo:
        collector = Collector(writer.items, names, aggregate=cfg.aggregate, top_k=cfg.top_k)
        gate = outage.start(cfg.storage_outage_s, first_wait_s=cfg.clip.storage_backoff_s,
                            max_wait_s=8 * cfg.clip.storage_backoff_s, wait=False)  # comes up while the pool starts
        ds = scored_clips(todo, spec, cfg, checkpoint, pool, num_classes, storage.join(output, "_fault_injected"),
                          gate)
        try:
            with outage.watch(gate, "[infer]"), progress.ticking(
                    lambda: (writer.finished, result.clips, list(busy.values()))):
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    for actor, seconds in zip(batch["actor"], batch["busy_s"]):
                        busy[actor] = busy.get(actor, 0.0) + float(seconds)
                    result.decode_s += float(batch["decode_s"].sum())
                    writer.add(collector.add(batch))
                    result.clips = collector.clips
                    progress.update(writer.finished, result.clips, list(busy.values()))
        except Exception as e:  # noqa: BLE001 - Ray Data gave up: actors dead past their restarts, a task past its retries
            logging.getLogger(__name__).error("inference ended early: %s", error_text(e), exc_info=True)
            writer.add(collector.finish(MODEL, f"model actors failed: {error_text(e)}"))
        finally:
            outage.stop(gate)
        writer.add(collector.finish())
    writer.flush(final=True)
    progress.update(writer.finished, result.clips, list(busy.values()), final=True)
    t_end = time.perf_counter()
    counts = merge_parts(output, [it["video_id"] for it in items + bad_rows], jsonl=cfg.jsonl)
    result.ok, result.errors, result.clips_total = counts["ok"], counts["errors"], counts["clips"]
    if counts["with_target"]:
        result.top1 = counts["correct"] / counts["with_target"]
    result.wall_s = t_end - t_start
    result.model_busy_s = list(busy.values())
    result.actors_seen = len(busy)
    result.model_nodes = len({a.split(":")[0] for a in busy})
    window = max(t_end - t_start, 1e-9)
    result.actor_idle = float(np.mean([max(0.0, 1.0 - b / window) for b in busy.values()])) if busy else 0.0
    info = {"num_classes": num_classes, "family": plan.family, "device": pool.device, "num_gpus": pool.num_gpus,
            "max_actors": pool.max_actors, "gpus_now": pool.gpus_now, "gpus_max": pool.gpus_max}
    write_summary(checkpoint, cfg, spec, info, result, recipe=plan.record())
    return result


def _set_context(ds: Any, cfg: InferConfig) -> Any:
    """This run's Ray Data settings, on the dataset's own context (the process's stays as it is):
    blocks of at most `block_mb` (a decode task's seek passes would otherwise be coalesced into
    128 MiB blocks: a long video's clips in one object), and the job's own progress line in place
    of Ray Data's progress bars and execution logs."""
    ds.context.target_max_block_size = cfg.block_mb * 2**20
    ds.context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ds


class _Rows:
    """Finished rows on their way into part files (and their plots, with `cfg.plot`)."""

    def __init__(self, cfg: InferConfig, output: str, names: list[str], result: InferResult,
                 items: dict[str, dict[str, Any]]):
        self.cfg, self.output, self.names, self.result, self.items = cfg, output, names, result, items
        self.rows: list[dict[str, Any]] = []
        self.plots: list[Any] = []
        self.finished = 0

    def add(self, rows: Any) -> None:
        from pipeline.infer.tasks import plot_task

        for row in rows:
            self.rows.append(row)
            self.finished += 1
            if self.cfg.plot and row["status"] == "ok":
                segments = self.items.get(row["video_id"], {}).get("segments")
                self.plots.append(plot_task.remote(row, self.names, plot_uri(self.output, row["video_id"]),
                                                   segments))
        self.flush()

    def flush(self, final: bool = False) -> None:
        """Write full parts (everything when final); a part on disk implies its plots are."""
        size = self.cfg.part_size
        while self.rows and (len(self.rows) >= size or final):
            chunk, self.rows = self.rows[:size], self.rows[size:]
            if self.plots:
                ray.get(self.plots)
                self.plots.clear()
            write_part(self.output, chunk)
            self.result.parts_written += 1
            self.result.processed += len(chunk)
