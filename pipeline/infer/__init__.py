"""Long-video inference on Ray Data: decode tasks -> a model actor pool -> one row per video.

    result = run_inference(checkpoint_uri, videos, output_uri, InferConfig())   # cover by default

What the model sees (frames, rate, short side, crop, crops) comes from the recipe the checkpoint
records (`config.plan_inference`, read in the driver before Ray work starts); how a video is
covered is the job's: `clip.sampling="cover"` (non-overlapping clips over the whole video, the
HowTo100M protocol) by default, `uniform` with `clip.clips` K as the opt-in, None for the recipe's
(`InferConfig(clip=ClipOverrides(sampling="uniform", clips=4))`).

Data flow (`driver`), the shape of Ray's batch-inference example:

1. The videos still to do become a dataset (`ray.data.from_items`); a decode task per
   `videos_per_task` videos (`num_cpus=decode_num_cpus`) runs `decode.decode_video`: probe, sample
   the clip spans, seek-decode only the wanted frames with the one clip path every stage uses
   (`pipeline.data.clips.iter_clips`), resize and crop; it yields a block of clip rows per seek
   pass (`clip.clips_per_decode` clips), so an hour-long video streams through in small blocks. A bad
   video is one error row, never a failed task.
2. `map_batches(actor.ClipScorer, concurrency=(min, max), num_gpus=...)`: batches of `batch_size`
   clips of any videos on model actors; the pool's size comes from the GPUs the cluster has or
   its autoscaler can add (`pool`), Ray Data grows it while clips wait and lets idle actors go.
3. The driver's `collect.Collector` turns the scored clips into one row per video (top-k +
   per-clip timeline, `pipeline.aggregate`) as soon as a video's clips are all in; rows go into
   part files `parts/part-<hash of video ids>.parquet` (atomic), then `predictions.parquet`
   (+ `.jsonl`), `errors.parquet`, `summary.json`, `labels.json`, `progress.json`,
   `plots/<video_id>.png` with `plot=True` (`outputs`).

Every input video gets exactly one row. A rerun skips the videos that have an `ok` row in a part
file. Modules: `config`, `inputs`, `decode`, `collect`, `outputs`, `progress` are Ray-free;
`pool`, `tasks`, `driver` use Ray and are imported only when one of their names is first used
(`run_inference`, `decode_video_task`, `plot_task`, `gpu_capacity`).
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.infer.config import (ClipOverrides, InferConfig, InferPlan, InferResult, clip_config, plan_inference,
                                   resolve_infer)
from pipeline.infer.decode import decode_video, read_video
from pipeline.infer.inputs import list_videos, read_label_names
from pipeline.infer.outputs import (PARTS_DIR, PLOTS_DIR, SCHEMA, done_video_ids, failed_row, list_parts,
                                    merge_parts, part_name, plot_uri, prediction_row, write_part,
                                    write_summary)

__all__ = ["ClipOverrides", "InferConfig", "InferPlan", "InferResult", "plan_inference", "resolve_infer", "PARTS_DIR",
           "PLOTS_DIR", "SCHEMA", "done_video_ids", "failed_row", "list_parts", "list_videos", "merge_parts", "part_name",
           "plot_uri", "prediction_row", "read_label_names", "clip_config", "decode_video", "read_video",
           "write_part", "write_summary"]

_RAY_NAMES = {  # name -> the Ray-using module that defines it
    "run_inference": "pipeline.infer.driver",
    "decode_video_task": "pipeline.infer.tasks",
    "plot_task": "pipeline.infer.tasks",
    "gpu_capacity": "pipeline.infer.pool",
}


def __getattr__(name: str) -> Any:
    """The Ray-using names, imported on first use so that `import pipeline.infer` stays Ray-free."""
    if name not in _RAY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_RAY_NAMES[name]), name)
    globals()[name] = value
    return value
