"""Settings shared by the inference tests: the synthetic videos, the clip shape, the long-video plans."""

from __future__ import annotations

import os

import pyarrow.parquet as pq

FPS = 15
SIZE = (96, 72)  # W, H of the synthetic videos
CLIP = dict(num_frames=4, sampling_rate=8, short_side=32, crop_size=32)  # 16 source frames ~ 1.07 s
CLIP_ARGS = ["--clip.sampling-rate", "8", "--clip.short-side", "32", "--clip.crop-size", "32"]

SEGMENT_SECONDS = 15.0
LONG_PLANS = {  # video -> segment labels (60-75 s in total); the majority differs per video
    "long_a": ["left", "up", "left", "left"],
    "long_b": ["down", "right", "down", "down", "up"],
    "long_c": ["up", "up", "right", "up"],
}


def read_rows(output: str) -> list[dict]:
    """The rows of `<output>/predictions.parquet`."""
    return pq.read_table(os.path.join(output, "predictions.parquet")).to_pylist()
