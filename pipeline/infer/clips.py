"""One video's clips for inference: open it, read its clips with the shared clip function (no Ray).

    meta, clips = video_clips({"uri": "s3://b/v.mp4", "video_id": "v"}, ClipConfig(sampling="cover"))
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from pipeline import storage
from pipeline.data.clips import ClipConfig, read_clips
from pipeline.data.decode import DecodeError, Video


def video_clips(item: dict[str, Any], cfg: ClipConfig) -> tuple[dict[str, Any], np.ndarray]:
    """Probe, sample and decode one video's clips -> (meta, uint8 `[K, V, T, S, S, 3]`).

    `item` is an input video (`uri`, and `start_sec` / `end_sec` when it names a segment).
    meta: `duration, fps, num_frames, starts, ends` (seconds per clip), `num_padded`.
    Only the sampled frames are decoded (seeking); DecodeError / OSError propagate.
    """
    with _open_source(item["uri"]) as src, Video(src, threads=1, max_pixels=cfg.max_pixels) as video:
        clips = read_clips(video, item, cfg, mode="test")
    info = clips.info
    meta = {
        "duration": float(info.duration),
        "fps": float(info.fps),
        "num_frames": int(info.num_frames),
        "starts": clips.starts,
        "ends": clips.ends,
        "num_padded": int(sum(clips.num_padded)),
        "truncated": bool(info.truncated),
    }
    return meta, clips.frames  # [K, V, T, S, S, 3]


@contextlib.contextmanager
def _open_source(uri: str) -> Iterator[Any]:
    """`storage.open_for_reading`, with a missing remote file as DecodeError('open')."""
    try:
        with storage.open_for_reading(uri) as src:
            yield src
    except FileNotFoundError as e:
        raise DecodeError("open", f"file not found: {uri}") from e
