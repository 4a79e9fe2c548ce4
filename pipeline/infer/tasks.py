"""Two Ray tasks beside the inference dataset: one video's clips at once (explanations), and a plot."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import ray

from pipeline.data.clips import ClipConfig
from pipeline.data.decode import DecodeError
from pipeline.infer.decode import read_video
from pipeline.plots import plot_timeline


@ray.remote(num_returns=2)
def decode_video_task(item: dict[str, Any], spec: ClipConfig) -> tuple[dict[str, Any], np.ndarray | None]:
    """Ray task around `read_video`: never raises; a failure is `meta["error"]` (and `stage`),
    clips None. Two objects, so that a driver reads only the small metadata."""
    import cv2

    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    try:
        meta, clips = read_video(item, spec)
        meta["error"], meta["nbytes"] = None, int(clips.nbytes)
    except DecodeError as e:
        meta, clips = {"error": e.message, "stage": e.stage}, None
    meta["decode_s"] = time.perf_counter() - t0
    return meta, clips


@ray.remote(num_cpus=0.25)
def plot_task(row: dict[str, Any], names: Sequence[str], uri: str, segments: Any = None) -> None:
    """Ray task around `plot_timeline` (keeps matplotlib off the driver)."""
    plot_timeline(row, names, uri, segments=segments)
