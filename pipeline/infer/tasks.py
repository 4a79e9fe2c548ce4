"""The two Ray tasks of inference: decode one video's clips, and plot one video's timeline."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import ray

from pipeline.infer.clips import video_clips
from pipeline import storage
from pipeline.data.clips import ClipConfig
from pipeline.data.rows import RETRYABLE_STAGE
from pipeline.plots import plot_timeline


@ray.remote(num_returns=2)
def decode_video_task(item: dict[str, Any], spec: ClipConfig) -> tuple[dict[str, Any], np.ndarray | None]:
    """Ray task around `video_clips`: never raises; a failure is `meta["error"]`, clips None.

    Returns two objects (metadata, uint8 clips `[K, V, T, S, S, 3]`) so that the driver reads
    only the small metadata and the clips go from the object store straight to a model actor.
    """
    _one_thread()
    t0 = time.perf_counter()
    try:
        meta, clips = storage.with_retries(lambda: video_clips(item, spec), attempts=spec.storage_attempts,
                                           backoff_s=spec.storage_backoff_s)
        meta["error"], meta["nbytes"] = None, int(clips.nbytes)
    except Exception as e:  # noqa: BLE001 - any failure of one video becomes its error row
        if storage.is_transient(e):  # the store's failure: an error row that a re-run retries
            stage = RETRYABLE_STAGE
        else:
            stage = getattr(e, "stage", None) or ("open" if isinstance(e, OSError) else "decode")
        meta, clips = {"error": f"{type(e).__name__}: {e}", "stage": f"decode.{stage}"}, None
    meta["decode_s"] = time.perf_counter() - t0
    return meta, clips


def _one_thread() -> None:
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@ray.remote(num_cpus=0.25)
def plot_task(row: dict[str, Any], names: Sequence[str], uri: str, segments: Any = None) -> None:
    """Ray task around `plot_timeline` (keeps matplotlib off the driver)."""
    plot_timeline(row, names, uri, segments=segments)
