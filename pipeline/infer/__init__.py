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
`pool`, `tasks`, `driver` use Ray. Every name of the package is imported on its first use, so a
decode worker (`decode.decode_videos`) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {  # name -> the module that defines it, imported on first use of the name
    **{n: "pipeline.infer.config" for n in ("ClipOverrides", "InferConfig", "InferPlan", "InferResult", "clip_config",
                                            "plan_inference", "resolve_infer")},
    **{n: "pipeline.infer.decode" for n in ("decode_video", "decode_videos", "read_video")},
    **{n: "pipeline.infer.inputs" for n in ("list_videos", "read_label_names")},
    **{n: "pipeline.infer.outputs" for n in ("PARTS_DIR", "PLOTS_DIR", "SCHEMA", "done_video_ids", "failed_row",
                                             "list_parts", "merge_parts", "part_name", "plot_uri", "prediction_row",
                                             "write_part", "write_summary")},
    "run_inference": "pipeline.infer.driver",
    "decode_video_task": "pipeline.infer.tasks",
    "plot_task": "pipeline.infer.tasks",
    "gpu_capacity": "pipeline.infer.pool",
}
_RAY_MODULES = ("pipeline.infer.driver", "pipeline.infer.tasks", "pipeline.infer.pool")
__all__ = sorted(n for n, m in _NAMES.items() if m not in _RAY_MODULES)  # the Ray-free names


def __getattr__(name: str) -> Any:
    """Every name is imported on first use: `import pipeline.infer` stays Ray-free, and a decode
    worker that imports `pipeline.infer.decode` loads neither torch nor Ray Data."""
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value
    return value
