"""Manifest rows -> clip rows: open a video, read its clips, flatten them to one row per view (no Ray).

    views, error = process_row(row, DecodeConfig(num_frames=8), mode="train", seed=0, epoch=3)

One output row per view (clip x crop):

    frames      uint8 [T, H, W, 3]   (H = W = crop_size)
    label       int64                (-1 when the manifest had no labels)
    video_id    str
    clip_index  int64                temporal clip number within the video (train: 0..clips_per_video-1)
    crop_index  int64                spatial crop number (0 for train / centre crop)
    start_sec   float64              clip span in the video, seconds from its first frame
    end_sec     float64
    num_padded  int64                frames repeated because the video / segment was too short
    epoch       int64
    truncated   bool                 the file ends early (a cut download): clips use the frames before the cut
    decoded_frames, kept_frames  int64  decode work of the row's video (frames the decoder produced,
                                     frames kept), on its first view, 0 on the others: sums over
                                     any set of rows give the decode work per frame kept

A bad row never raises: `process_row` returns `([], error_row)` with the stage that failed. A
storage failure (5xx, throttling, resets, timeouts, expired credentials) is retried with backoff;
when it persists the row's stage is `storage` (retryable), never a verdict on the video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.data import decode as vdecode
from pipeline.data.clips import ClipConfig, Clips, read_clips, row_rng
from pipeline.data.errors import STORAGE, read_or_error

RETRYABLE_STAGE = STORAGE  # error rows of this stage are transient: a re-run tries them again
OUTPUT_COLUMNS = ("frames", "label", "video_id", "clip_index", "crop_index", "start_sec",
                  "end_sec", "num_padded", "epoch", "truncated", "decoded_frames", "kept_frames")
WORK_COLUMNS = ("decoded_frames", "kept_frames")  # decode work: a training metric, not clip data


@dataclass
class DecodeConfig(ClipConfig):
    """The clip recipe (`ClipConfig`) plus how decode tasks run and what each reserves."""

    decode_threads: int = 1  # PyAV decoder threads per video
    num_cpus: float = 1.0  # CPUs reserved per decode task
    memory: int = 512 * 1024 * 1024  # bytes reserved per decode task (Ray's `memory` resource; 0: none)
    batch_size: int = 2  # manifest rows per decode task
    read_block_size: int = 8 * 1024 * 1024  # bytes per ranged read from object storage (a seek costs at most one block)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size <= 0:
            raise ValueError("batch_size must be positive")


def manifest_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """The manifest fields a decode task needs, as one Arrow table (O(rows), whatever the epochs)."""
    return pa.table({
        "path": pa.array([str(r["path"]) for r in rows], pa.string()),
        "label": pa.array([int(r.get("label", -1)) for r in rows], pa.int64()),
        "video_id": pa.array([str(r.get("video_id") or r["path"]) for r in rows], pa.string()),
        "start_sec": pa.array([None if r.get("start_sec") is None else float(r["start_sec"]) for r in rows],
                              pa.float64()),
        "end_sec": pa.array([None if r.get("end_sec") is None else float(r["end_sec"]) for r in rows],
                            pa.float64()),
    })


def clip_rows(clips: Clips, row: dict[str, Any], epoch: int = 0,
              work: tuple[int, int] = (0, 0)) -> list[dict[str, Any]]:
    """One output row per view of `clips` (see the module docstring for the columns); `work`
    (frames decoded, kept) goes on the first."""
    out = []
    for k, views in enumerate(clips.frames):  # [V, T, H, W, 3]
        for c, view in enumerate(views):
            out.append({
                "frames": view, "label": int(row.get("label", -1)), "video_id": str(row["video_id"]),
                "clip_index": k, "crop_index": c, "start_sec": clips.starts[k], "end_sec": clips.ends[k],
                "num_padded": clips.num_padded[k], "epoch": int(epoch), "truncated": bool(clips.info.truncated),
                "decoded_frames": 0 if out else int(work[0]), "kept_frames": 0 if out else int(work[1]),
            })
    return out


def video_clips(src: Any, row: dict[str, Any], cfg: DecodeConfig, *, mode: str, seed: int,
                epoch: int = 0) -> list[dict[str, Any]]:
    """All output rows (views) for one manifest row, decoding from `src` (path or file object).

    Raises `decode.DecodeError` (with a stage) for bad input.
    """
    rng = row_rng(seed, epoch, row)
    with vdecode.Video(src, threads=cfg.decode_threads, max_pixels=cfg.max_pixels) as video:  # one open for probe and decode
        clips = read_clips(video, row, cfg, mode=mode, rng=rng)
        return clip_rows(clips, row, epoch, work=(video.stats.decoded, video.stats.kept))


def process_row(row: dict[str, Any], cfg: DecodeConfig, *, mode: str, seed: int,
                epoch: int = 0) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """Make a row's clips, opening remote videos through `pipeline.storage`; never raises.

    Local files are handed to PyAV by path (native I/O); remote ones as an fsspec file object
    read in `cfg.read_block_size` ranges. Returns (views, None) on success, or
    ([], {"uri", "stage", "error"}) on failure.
    """
    uri = str(row.get("path"))

    def attempt() -> list[dict[str, Any]]:
        with storage.open_for_reading(uri, block_size=cfg.read_block_size) as src:
            return video_clips(src, row, cfg, mode=mode, seed=seed, epoch=epoch)

    views, error = read_or_error(uri, attempt, attempts=cfg.storage_attempts, backoff_s=cfg.storage_backoff_s)
    return views or [], error


def _stack_frames(views: list[np.ndarray]) -> np.ndarray:
    """[N] x [T, H, W, 3] -> [N, T, H, W, 3], or an object array when shapes differ."""
    if len({v.shape for v in views}) == 1:
        return np.stack(views)
    out = np.empty(len(views), dtype=object)
    out[:] = views
    return out


def views_to_batch(views: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Output rows -> a columnar numpy batch with fixed dtypes."""
    if not views:
        raise ValueError("no views to batch")
    batch = {"frames": _stack_frames([v["frames"] for v in views]),
             "video_id": np.array([v["video_id"] for v in views], dtype=object)}
    for name, dtype in (("label", np.int64), ("clip_index", np.int64), ("crop_index", np.int64),
                        ("start_sec", np.float64), ("end_sec", np.float64),
                        ("num_padded", np.int64), ("epoch", np.int64), ("truncated", np.bool_),
                        ("decoded_frames", np.int64), ("kept_frames", np.int64)):
        batch[name] = np.array([v[name] for v in views], dtype=dtype)
    return batch
