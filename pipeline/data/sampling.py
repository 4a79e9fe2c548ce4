"""Clip samplers (pure: no I/O, plain tuples), pytorchvideo style.

A clip is a half-open span ``(start, end)`` of source frame indices; `clip_indices` turns it into
`num_frames` indices by linspace, clamped to the video, padding short videos with the last frame.
"""

from __future__ import annotations

import numpy as np


def clip_span(num_frames: int, sampling_rate: int, fps: float) -> int:
    """Source frames per clip: sampling_rate * num_frames * fps / 30, rounded, >= 1 (docs/DATA.md)."""
    if num_frames <= 0 or sampling_rate <= 0:
        raise ValueError(f"num_frames and sampling_rate must be positive ({num_frames}, {sampling_rate})")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return max(1, round(sampling_rate * num_frames * fps / 30.0))


def random_clip(total_frames: int, span: int, rng: np.random.Generator) -> tuple[int, int]:
    """A random clip (train): start uniform in [0, total - span]; (0, span) for short videos."""
    _check(total_frames, span)
    start = int(rng.integers(0, max(total_frames - span, 0) + 1))
    return start, start + span


def uniform_clips(total_frames: int, span: int, k: int) -> list[tuple[int, int]]:
    """K clips with evenly spaced starts from 0 to total - span (test); k=1 -> the centre clip."""
    _check(total_frames, span)
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    last = max(total_frames - span, 0)
    if k == 1:
        starts = [last // 2]
    else:
        starts = [round(j * last / (k - 1)) for j in range(k)]
    return [(s, s + span) for s in starts]


def cover_clips(total_frames: int, span: int) -> list[tuple[int, int]]:
    """Non-overlapping clips covering every frame once (HowTo100M protocol).

    Clips are [0, span), [span, 2 span), ... all of full length, so every clip keeps the model's
    frame spacing; the last one may reach past the video's end, and `clip_indices` pads (and
    counts) its indices there, as for videos shorter than one span.
    """
    _check(total_frames, span)
    return [(s, s + span) for s in range(0, total_frames, span)]


def clip_indices(start: int, end: int, num_frames: int, total_frames: int) -> tuple[np.ndarray, int]:
    """`num_frames` indices linspace over [start, end - 1], clamped to the video.

    Returns (int64 [num_frames], num_padded): indices past the last frame are clamped to it
    (the frame repeats) and counted as padded.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if total_frames <= 0:
        raise ValueError(f"total_frames must be positive, got {total_frames}")
    if end <= start:
        raise ValueError(f"empty clip ({start}, {end})")
    raw = np.round(np.linspace(start, end - 1, num_frames)).astype(np.int64)
    num_padded = int((raw > total_frames - 1).sum())
    return np.clip(raw, 0, total_frames - 1), num_padded


def _check(total_frames: int, span: int) -> None:
    if total_frames <= 0:
        raise ValueError(f"total_frames must be positive, got {total_frames}")
    if span <= 0:
        raise ValueError(f"span must be positive, got {span}")
