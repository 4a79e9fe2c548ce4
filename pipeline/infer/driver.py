"""`run_inference`: inputs -> model actors -> the scheduler's loop -> merged outputs and summary."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import ray

from pipeline import storage
from pipeline.infer.actor import make_actors
from pipeline.infer.config import InferConfig, InferPlan, InferResult, clip_config, plan_inference
from pipeline.infer.inputs import list_videos, read_label_names
from pipeline.infer.outputs import done_video_ids, merge_parts, write_summary
from pipeline.infer.scheduler import Scheduler


def run_inference(checkpoint: str, videos: str | list[dict[str, Any]], output: str,
                  cfg: InferConfig | None = None, *, device: str = "auto",
                  actors: list[Any] | None = None, howto100m_template: str | None = None,
                  plan: InferPlan | None = None) -> InferResult:
    """Classify every video (a manifest/folder URI or items `{video_id, uri, target}`).

    Writes parts, then `predictions.parquet` etc. under `output` (see `pipeline.infer`). Videos
    that already have an `ok` row under `output` are skipped. `actors` reuses started `ClipScorer`s.
    Clip settings left at None in `cfg` come from the checkpoint's recipe (`plan_inference`;
    `plan` passes one already made); differences from it are logged as warnings.
    """
    from pipeline.data.manifest import LABELS_FILE, LabelMap, write_labels

    cfg = cfg or InferConfig()
    if plan is None:
        plan = plan_inference(checkpoint, cfg)
        for warning in plan.warnings:
            logging.getLogger(__name__).warning(warning)
    t_start = time.perf_counter()
    if isinstance(videos, str):
        items, bad_rows = list_videos(videos, howto100m_template)
    else:
        items, bad_rows = [dict(v) for v in videos], []
    done = done_video_ids(output)
    todo = [it for it in items if it["video_id"] not in done]
    result = InferResult(output=output, predictions=storage.join(output, "predictions.parquet"),
                         total=len(items) + len(bad_rows), skipped=len(items) - len(todo))

    own_actors = actors is None
    actors = actors if actors is not None else make_actors(checkpoint, cfg, device,
                                                                  fault_marker=storage.join(output, "_fault_injected"))
    info = ray.get([a.info.remote() for a in actors])[0]
    t_ready = time.perf_counter()
    names = read_label_names(cfg.labels, checkpoint, info["num_classes"], recorded=plan.recipe.get("labels"))
    spec = clip_config(cfg, plan.resolved.values)
    write_labels(storage.join(output, LABELS_FILE), LabelMap(tuple(names)))

    scheduler = Scheduler(actors, spec, cfg, output, names, result)
    scheduler.run(todo, bad_rows)
    t_end = time.perf_counter()
    scheduler.flush_rows(final=True)
    counts = merge_parts(output, [it["video_id"] for it in items + bad_rows], jsonl=cfg.jsonl)
    result.ok, result.errors = counts["ok"], counts["errors"]
    if counts["with_target"]:
        result.top1 = counts["correct"] / counts["with_target"]
    if own_actors:
        for a in actors:
            ray.kill(a)
    result.wall_s = t_end - t_start
    result.model_busy_s = scheduler.busy
    window = max(t_end - t_ready, 1e-9)
    result.actor_idle = float(np.mean([max(0.0, 1.0 - b / window) for b in scheduler.busy]))
    write_summary(checkpoint, cfg, spec, info, result, recipe=plan.record())
    return result
