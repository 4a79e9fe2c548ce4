"""Long-video inference on Ray core: decode tasks -> cross-video batches -> model actors.

    result = run_inference(checkpoint_uri, videos, output_uri, InferConfig(sampling="cover"))

The clip settings left at None in `InferConfig` come from the recipe the checkpoint records
(`config.plan_inference`, read in the driver before any actor starts; see `pipeline.model.recipe`).

Data flow (the HowTo100M protocol: each long video covered by clips, one label per video):

1. One CPU task per video (`tasks.decode_video_task`, `num_cpus=decode_num_cpus`, around
   `clips.video_clips`): probe, sample clip spans (`cover_clips`: non-overlapping clips covering
   the whole video, or `uniform_clips`: K clips), frame-exact seek decode of only the wanted
   frames, short-side resize and crop(s). It returns two objects: small metadata (clip times,
   duration, error) and the uint8 clips `[K, V, T, S, S, 3]` (V = 1 or 3 crops). The driver only
   ever reads the metadata.
2. The driver (`scheduler.Scheduler`) packs clips of any videos into fixed-size batches and sends
   each batch as a list of `(clips_ref, clip_indices)` to the least loaded model actor
   (`actor.ClipScorer`: one per GPU, or on CPU), which fetches the frames straight from the object
   store, loads the model once and returns clip logits `[B, C]` (crop logits averaged).
3. When every clip of a video is scored its scores are aggregated (`pipeline.aggregate`) into
   one output row (top-k + per-clip timeline); rows are written in Parquet part files
   `parts/part-<hash of video ids>.parquet`, each written atomically, then merged into
   `predictions.parquet` (+ `predictions.jsonl`), `errors.parquet`, `summary.json`,
   `labels.json`, and `plots/<video_id>.png` with `plot=True` (`outputs`).

Backpressure: at most `max_videos_in_flight` videos are decoding or decoded-but-not-scored, their
decoded clips stay within `max_mb_in_flight` (in bytes, whatever the video lengths), and at most
`max_batches_per_actor` batches are queued on each actor (`ray.wait` on all), so the memory held
is bounded whatever the corpus size. Re-running skips the videos that already have
an `ok` row in a part file; every input video gets exactly one row (an error row when its video
is missing or corrupt: status "error", stage, error).

Modules: `config`, `inputs`, `clips`, `outputs` are pure (no Ray); `tasks`, `actor`,
`scheduler` and `driver` use Ray and are imported only when one of their names is first used
(`run_inference`, `make_actors`, `ClipScorer`, `decode_video_task`, `plot_task`, `Scheduler`).
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.infer.clips import video_clips
from pipeline.infer.config import InferConfig, InferPlan, InferResult, clip_config, plan_inference, resolve_infer
from pipeline.infer.inputs import list_videos, read_label_names
from pipeline.infer.outputs import (PARTS_DIR, PLOTS_DIR, SCHEMA, done_video_ids, error_row, list_parts,
                                    merge_parts, part_name, plot_uri, prediction_row, write_part,
                                    write_summary)

__all__ = ["InferConfig", "InferPlan", "InferResult", "plan_inference", "resolve_infer", "PARTS_DIR", "PLOTS_DIR", "SCHEMA", "done_video_ids",
           "error_row", "list_parts", "list_videos", "merge_parts", "part_name", "plot_uri",
           "prediction_row", "read_label_names", "clip_config", "video_clips", "write_part",
           "write_summary"]

_RAY_NAMES = {  # name -> the Ray-using module that defines it
    "run_inference": "pipeline.infer.driver",
    "make_actors": "pipeline.infer.actor",
    "ClipScorer": "pipeline.infer.actor",
    "decode_video_task": "pipeline.infer.tasks",
    "plot_task": "pipeline.infer.tasks",
    "Scheduler": "pipeline.infer.scheduler",
}


def __getattr__(name: str) -> Any:
    """The Ray-using names, imported on first use so that `import pipeline.infer` stays Ray-free."""
    if name not in _RAY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_RAY_NAMES[name]), name)
    globals()[name] = value
    return value
