"""One video's clips for inference: probe, sample clip spans, decode only those frames, crop (no Ray).

    meta, clips = video_clips("s3://b/v.mp4", ClipSpec(num_frames=8, sampling_rate=32, cover=True,
                                                      clips=1, crops=1, short_side=224, crop_size=224))
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from pipeline import storage
from pipeline.infer.config import ClipSpec


def video_clips(uri: str, spec: ClipSpec) -> tuple[dict[str, Any], np.ndarray]:
    """Probe, sample and decode one video's clips -> (meta, uint8 `[K, V, T, S, S, 3]`).

    meta: `duration, fps, num_frames, starts, ends` (seconds per clip), `num_padded`.
    Only the sampled frames are decoded (seeking); DecodeError / OSError propagate.
    """
    from einops import rearrange

    from pipeline.data import decode as dec
    from pipeline.data import sampling, transforms

    with _open_source(uri) as src, dec.Video(src, threads=1) as video:  # one open for probe and every chunk
        info = video.info
        span = sampling.clip_span(spec.num_frames, spec.sampling_rate, info.fps)
        spans = (sampling.cover_clips(info.num_frames, span) if spec.cover
                 else sampling.uniform_clips(info.num_frames, span, spec.clips))
        clips, padded = [], 0
        for c0 in range(0, len(spans), spec.clips_per_decode):
            chunk = spans[c0:c0 + spec.clips_per_decode]
            idx = []
            for start, end in chunk:
                ind, pad = sampling.clip_indices(start, end, spec.num_frames, info.num_frames)
                idx.append(ind)
                padded += pad
            frames, _ = video.read(np.concatenate(idx), size=spec.short_side)
            frames = rearrange(frames, "(c t) h w k -> c t h w k", t=spec.num_frames)
            for clip in frames:  # [T, H, W, 3]
                views = (transforms.three_crops(clip, spec.crop_size) if spec.crops == 3
                         else [transforms.center_crop(clip, spec.crop_size)])
                clips.append(np.stack(views))  # [V, T, S, S, 3]
    meta = {
        "duration": float(info.duration),
        "fps": float(info.fps),
        "num_frames": int(info.num_frames),
        "starts": [s / info.fps for s, _ in spans],
        "ends": [min(e, info.num_frames) / info.fps for _, e in spans],
        "num_padded": int(padded),
    }
    return meta, np.stack(clips)  # [K, V, T, S, S, 3]


@contextlib.contextmanager
def _open_source(uri: str) -> Iterator[Any]:
    """`storage.open_for_reading`, with a missing remote file as DecodeError('open')."""
    from pipeline.data.decode import DecodeError

    try:
        with storage.open_for_reading(uri) as src:
            yield src
    except FileNotFoundError as e:
        raise DecodeError("open", f"file not found: {uri}") from e
