"""Clips from an open video: one config vocabulary and one function for every stage (no Ray).

    with decode.Video(src) as video:
        clips = read_clips(video, row, ClipConfig(num_frames=8, sampling="cover"), mode="test")
        clips.frames    # uint8 [K, V, T, S, S, 3]: K clips x V spatial views (crops)
        clips.starts    # seconds from the video's first frame, per clip

Training (random clip, short-side jitter, random crop, flip), validation, preprocess and inference
all call `read_clips`; they differ only in `mode` and the `ClipConfig` they pass. The recipe:

- span: a clip covers `sampling_rate * num_frames` source frames at 30 fps, scaled to the
  video's real frame rate (`sampling.clip_span`), inside the row's segment (`start_sec`,
  `end_sec`; the whole video when absent), mapped to frames through the video's clock;
- train: `clips_per_video` random clips (default 1), each with its own span, short side drawn
  from `train_short_side`, random `crop_size` crop, horizontal flip with p = 0.5 (`hflip`) and
  RandAugment with `randaugment_n` ops (`randaugment.py`: the same ops on every frame of a clip);
  several clips share one open and one decode pass (frames decoded at the largest drawn short side,
  the others resized down from it);
- val / test: `clips` uniformly spaced clips (`sampling="uniform"`) or non-overlapping clips
  covering the segment (`sampling="cover"`), resized to `short_side`, then 1 centre crop or 3
  crops along the long side (`crops`); `crop_size=None` keeps whole frames.

Frames are decoded `clips_per_decode` clips at a time with seeking, so only the wanted frames are
decoded and a long video never holds all its native-size frames at once. Every random choice comes
from the `rng` the caller passes (see `row_rng`): clips never depend on batching or workers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import numpy as np
from einops import rearrange

from pipeline.data import randaugment, sampling, transforms
from pipeline.data.decode import MAX_PIXELS, DecodeError, Video, VideoInfo

Mode = Literal["train", "val", "test"]


@dataclass
class ClipConfig:
    """What a clip is: frames, spacing, size, and the eval protocol (clips x crops)."""

    num_frames: int = 8  # frames per clip
    sampling_rate: int = 32  # source frames between sampled frames at 30 fps (scaled to the video's fps)
    crop_size: int | None = 224  # square crop side; None keeps whole frames (val/test only)
    short_side: int | None = None  # val/test short side before cropping; None: crop_size
    train_short_side: tuple[int, int] | None = None  # train short-side jitter [lo, hi]; None: (256, 320) x crop_size / 224
    sampling: Literal["uniform", "cover"] = "uniform"  # val/test: uniform: `clips` evenly spaced; cover: non-overlapping clips over the whole video (HowTo100M)
    clips: int = 1  # val/test clips per video with sampling=uniform
    crops: int = 1  # val/test views per clip: 1 centre crop, or 3 crops along the long side
    hflip: bool = True  # train: horizontal flip with p = 0.5
    clips_per_video: int = 1  # train: independent random clips per video from one open and one decode pass (repeated augmentation)
    randaugment_n: int = 0  # train: RandAugment ops per clip, the same for every frame (0: off; see data/randaugment.py)
    randaugment_m: float = 9.0  # train: RandAugment magnitude on the paper's 0..10 scale (timm's rand-m9 default)
    clips_per_decode: int = 8  # clips decoded per seek pass (bounds native-size frames held at once)
    max_pixels: int | None = MAX_PIXELS  # width x height above which a video is refused before decoding (admits 4K); None: no cap
    storage_attempts: int = 3  # tries per video while storage fails transiently (5xx, throttling, resets, timeouts)
    storage_backoff_s: float = 2.0  # wait before the second try (doubling after)

    def __post_init__(self) -> None:
        for name in ("num_frames", "sampling_rate", "clips", "clips_per_decode", "clips_per_video"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.crop_size is not None and self.crop_size <= 0:
            raise ValueError("crop_size must be positive (or None)")
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {self.crops}")
        if self.sampling not in ("uniform", "cover"):
            raise ValueError(f"sampling must be uniform or cover, got {self.sampling!r}")
        if self.short_side is not None and self.short_side <= 0:
            raise ValueError(f"short_side must be positive, got {self.short_side}")
        lo, hi = self.train_range()
        if self.crop_size is not None and (lo < self.crop_size or hi < lo):
            raise ValueError(f"train_short_side {(lo, hi)} must satisfy crop_size <= min <= max")
        if self.crop_size is not None and self.eval_short_side() < self.crop_size:
            raise ValueError(f"short_side {self.eval_short_side()} < crop_size {self.crop_size}")
        randaugment.check(self.randaugment_n, self.randaugment_m)

    def train_range(self) -> tuple[int, int]:
        """The train short-side jitter range (explicit, or (256, 320) * crop_size / 224)."""
        if self.train_short_side is not None:
            return int(self.train_short_side[0]), int(self.train_short_side[1])
        crop = self.crop_size or 224
        return round(256 * crop / 224), round(320 * crop / 224)

    def eval_short_side(self) -> int:
        """The val/test short side."""
        if self.short_side is not None:
            return int(self.short_side)
        if self.crop_size is None:
            raise ValueError("short_side is required when crop_size is None")
        return self.crop_size


@dataclass
class Clips:
    """The clips of one video (or segment), with their place in its timeline."""

    frames: np.ndarray  # uint8 [K, V, T, H, W, 3]
    starts: list[float]  # seconds from the first frame, per clip
    ends: list[float]
    num_padded: list[int]  # frames repeated per clip (video or segment shorter than the clip)
    info: VideoInfo  # info.truncated: the file ends early; clips come from the frames before the cut


def row_key(row: dict[str, Any]) -> int:
    """Stable 63-bit key of a row (path, video_id, segment), independent of process and order."""
    text = f"{row['path']}\x1f{row.get('video_id')}\x1f{row.get('start_sec')}\x1f{row.get('end_sec')}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def row_rng(seed: int, epoch: int, row: dict[str, Any]) -> np.random.Generator:
    """The generator behind every random choice for one row in one epoch."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), row_key(row)])


def segment_frames(video: Video, row: dict[str, Any]) -> tuple[int, int]:
    """[first, last) frames of the row's segment (`start_sec` / `end_sec`; whole video when absent)."""
    info = video.info
    first, last = 0, info.num_frames
    if row.get("start_sec") is not None:
        first = video.index_at(row["start_sec"])
    if row.get("end_sec") is not None:
        last = video.index_at(row["end_sec"])
    if last <= first:
        raise DecodeError(
            "sample", f"segment [{row.get('start_sec')}, {row.get('end_sec')}] s holds no frames "
            f"of a {info.num_frames}-frame video at {info.fps:.3f} fps")
    return first, last


def read_clips(video: Video, row: dict[str, Any], cfg: ClipConfig, *, mode: Mode,
               rng: np.random.Generator | None = None) -> Clips:
    """The uint8 clips of one manifest row from an open video (see the module docstring).

    `rng` drives train mode's random choices (required there). Raises `DecodeError` (with a
    stage) for bad input.
    """
    chunks = list(iter_clips(video, row, cfg, mode=mode, rng=rng))
    return Clips(
        frames=_stack([f for c in chunks for f in c.frames]),  # [K, V, T, H, W, 3]
        starts=[t for c in chunks for t in c.starts],
        ends=[t for c in chunks for t in c.ends],
        num_padded=[p for c in chunks for p in c.num_padded],
        info=video.info,
    )


def clip_spans(video: Video, row: dict[str, Any], cfg: ClipConfig, *, mode: Mode,
               rng: np.random.Generator | None = None) -> tuple[int, int, list[tuple[int, int]], list[int]]:
    """(first frame, frames in the segment, clip spans [start, end) in segment frames, short side
    per clip): the clips a row gets, before any frame is decoded."""
    if mode == "train" and (rng is None or cfg.crop_size is None):
        raise ValueError("train mode needs an rng and a crop_size")
    first, last = segment_frames(video, row)
    total = last - first
    span = sampling.clip_span(cfg.num_frames, cfg.sampling_rate, video.info.fps)
    if mode == "train":
        spans, sizes = [], []
        lo, hi = cfg.train_range()
        for _ in range(cfg.clips_per_video):  # each clip: its own span and scale (then crop, flip)
            spans.append(sampling.random_clip(total, span, rng))
            sizes.append(int(rng.integers(lo, hi + 1)))
        return first, total, spans, sizes
    spans = sampling.cover_clips(total, span) if cfg.sampling == "cover" else sampling.uniform_clips(
        total, span, cfg.clips)
    return first, total, spans, [cfg.eval_short_side()] * len(spans)


def iter_clips(video: Video, row: dict[str, Any], cfg: ClipConfig, *, mode: Mode,
               rng: np.random.Generator | None = None, skip: int = 0) -> Iterator[Clips]:
    """`read_clips`, `cfg.clips_per_decode` clips at a time: one `Clips` per seek pass, so that a
    long video's clips can be consumed (and freed) while the rest decode. `skip` leaves out the
    first clips without decoding them (a val/test reader resuming after a failure; train mode's
    random draws would differ). Every chunk's `info` is the video's; `clip_spans` tells the clip
    count before any decode."""
    first, total, spans, sizes = clip_spans(video, row, cfg, mode=mode, rng=rng)
    for c0 in range(0, len(spans), cfg.clips_per_decode):
        chunk, chunk_sizes = spans[c0:c0 + cfg.clips_per_decode], sizes[c0:c0 + cfg.clips_per_decode]
        if c0 + len(chunk) <= skip:
            continue
        clips, pads = _decode_chunk(video, chunk, first, total, cfg.num_frames, max(chunk_sizes))
        frames = []
        for clip, size in zip(clips, chunk_sizes):
            if size != max(chunk_sizes):  # several train scales from one pass: down from the largest
                clip = transforms.short_side_resize(clip, size)
            frames.append(_stack(_views(clip, cfg, mode, rng)))  # [V, T, H, W, 3]
        keep = max(0, skip - c0)  # clips of this pass already delivered before a resume
        yield Clips(
            frames=_stack(frames[keep:]),  # [k, V, T, H, W, 3]
            starts=[video.time_of(first + s) for s, _ in chunk[keep:]],
            ends=[video.time_of(first + min(e, total)) for _, e in chunk[keep:]],
            num_padded=pads[keep:],
            info=video.info,
        )


def _decode_chunk(video: Video, spans: list[tuple[int, int]], first: int, total: int, num_frames: int,
                  size: int) -> tuple[np.ndarray, list[int]]:
    """One seek pass over some clips -> (uint8 [k, T, H, W, 3] at short side `size`, padded per clip)."""
    picks = [sampling.clip_indices(s, e, num_frames, total) for s, e in spans]
    wanted = np.concatenate([idx for idx, _ in picks]) + first  # [k * T]
    frames, past_end = video.read(wanted.tolist(), size=size)
    clips = rearrange(frames, "(k t) h w c -> k t h w c", k=len(spans))
    past = _past_end_per_clip(wanted, past_end, len(spans))
    return clips, [min(num_frames, int(pad + past[k])) for k, (_, pad) in enumerate(picks)]


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """np.stack, without the copy when there is one array (a train clip: one clip, one view)."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def _views(clip: np.ndarray, cfg: ClipConfig, mode: str, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Spatial views of one decoded clip [T, H, W, 3] (already at its short side)."""
    if mode == "train":
        out = transforms.random_crop(clip, cfg.crop_size, rng)  # a view
        out = transforms.hflip(out) if cfg.hflip and rng.random() < 0.5 else np.ascontiguousarray(out)
        if cfg.randaugment_n:
            out = randaugment.randaugment(out, cfg.randaugment_n, cfg.randaugment_m, rng)
        return [out]
    if cfg.crop_size is None:
        return [clip]
    if cfg.crops == 3:
        return [np.ascontiguousarray(c) for c in transforms.three_crops(clip, cfg.crop_size)]
    return [np.ascontiguousarray(transforms.center_crop(clip, cfg.crop_size))]


def _past_end_per_clip(wanted: np.ndarray, past_end: int, k: int) -> list[int]:
    """Split decode's count of requested frames past the stream's real end over the k clips.

    Those frames are the highest requested indices, so take the smallest cutoff whose
    occurrences in `wanted` add up to `past_end` and count, per clip, indices at or above it.
    """
    if not past_end:
        return [0] * k
    cutoff, seen = int(wanted.min()), 0
    for value in np.unique(wanted)[::-1]:
        seen += int((wanted == value).sum())
        if seen >= past_end:
            cutoff = int(value)
            break
    per_clip = rearrange(wanted, "(k t) -> k t", k=k)
    return [int((clip >= cutoff).sum()) for clip in per_clip]
