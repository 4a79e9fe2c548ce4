"""A synthetic motion-direction corpus of real H.264 MP4s (PyAV; no Ray).

Each video shows a large bright square with a dark rim moving in one direction (`CLASSES`) over
a noisy background, flat-coloured by default (`textured=True` gives both a smooth random
texture). Position wraps around the frame and starts anywhere, speed is random per video, so the
object's position distribution in any single frame is the same for every class: only the order
of frames tells the class (a model blind to frame order can at best tell the axis, 50 %).

Measured (`configs/debug.yaml`: the `debug` TimeSformer with its from-scratch init, 8 frames x
32 px at sampling rate 4, AdamW lr 1e-3 for 16 clips, 160 flat videos, 2 Ray Train workers):
divided attention reaches 0.95-1.0 validation accuracy in 500-700 steps, space-only 0.35
(chance 0.25). With whole-pixel motion, or the official init, it stays near 0.5 (the axis): see
docs/DATA.md ("Learnability").

Speeds are 0.4-0.8 frame sizes per second, so sampled frames up to ~0.6 s apart (sampling_rate
<= 16 at 30 fps; 2-8 gives small, easy steps) move the object less than half the frame and the
direction stays unambiguous under wrap-around.

Long videos chain segments of known labels (the object keeps its position across segments).
`make_corpus` writes videos, train/val/long manifests and labels.json to a folder or any URI.
"""

from __future__ import annotations

import csv
import io
import json
from fractions import Fraction
from typing import Sequence

import av
import numpy as np

from pipeline import storage

CLASSES: list[str] = ["left", "right", "up", "down"]
# unit motion per class as (dx, dy) in image coordinates (y grows downwards)
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SPEED_RANGE = (0.4, 0.8)  # object speed in frame sizes per second (see the module docstring)
OBJECT_FRACTION = 0.5  # object side / short side of the frame


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """A smooth random texture in [0, 1], [H, W], by upsampling coarse noise."""
    import cv2

    coarse = rng.random((max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _background(rng: np.random.Generator, h: int, w: int, textured: bool) -> np.ndarray:
    """Mid-grey coloured texture (or one flat colour), float32 [H, W, 3] in ~70..140."""
    if textured:
        tex = 0.6 * _smooth_noise(rng, h, w, 8) + 0.4 * _smooth_noise(rng, h, w, 3)
    else:
        tex = np.full((h, w), rng.uniform(0.2, 0.8), dtype=np.float32)
    tint = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    return (70 + 60 * tex[..., None] * tint).astype(np.float32)


def _sprite(rng: np.random.Generator, side: int, textured: bool) -> np.ndarray:
    """Bright object with a smooth (non-periodic) random texture (or flat) and a dark rim,
    float32 [side, side, 3]. Smooth on purpose: a periodic pattern shifted by about half its
    period looks like motion the other way (aliasing)."""
    colour = rng.uniform(190, 255, size=3).astype(np.float32)
    if textured:
        tex = 0.75 + 0.25 * _smooth_noise(rng, side, side, max(2, side // 3))
    else:
        tex = np.ones((side, side), dtype=np.float32)
    sprite = colour * tex[..., None]
    rim = max(1, side // 10)
    sprite[:rim], sprite[-rim:], sprite[:, :rim], sprite[:, -rim:] = 10, 10, 10, 10
    return sprite


def _render(bg: np.ndarray, sprite: np.ndarray, x: float, y: float, rng: np.random.Generator,
            noise: float) -> np.ndarray:
    """Background with the sprite placed at sub-pixel (x, y) (wrapping around) plus pixel noise
    -> uint8. Sub-pixel placement (bilinear weights at the edges) keeps slow motion smooth: with
    whole-pixel steps, and the aliasing of a later downscale, direction is far harder to learn."""
    import cv2

    h, w = bg.shape[:2]
    side = sprite.shape[0]
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    shift = np.float32([[1, 0, x - x0], [0, 1, y - y0]])
    big = (side + 1, side + 1)
    colour = cv2.warpAffine(sprite, shift, big, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(np.ones((side, side), np.float32), shift, big, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)[..., None]  # coverage of each pixel
    at = np.ix_((y0 + np.arange(side + 1)) % h, (x0 + np.arange(side + 1)) % w)
    frame = bg.copy()
    frame[at] = frame[at] * (1 - alpha) + colour  # `colour` is already weighted by coverage
    frame += rng.normal(0, noise, size=frame.shape).astype(np.float32)
    return frame.clip(0, 255).astype(np.uint8)


def _encode(path: str, frames, *, fps: float, size: tuple[int, int], gop: int, crf: int = 20) -> None:
    """Encode uint8 [H, W, 3] frames to an H.264 MP4 at `path` (local path or any URI)."""
    w, h = size
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": str(crf), "preset": "veryfast",
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    storage.write_bytes_atomic(str(path), buf.getvalue())


def _check_size(size: tuple[int, int]) -> None:
    w, h = size
    if w % 2 or h % 2 or w < 16 or h < 16:
        raise ValueError(f"size must be even and >= 16 (yuv420p), got {size}")


def _motion_frames(labels_per_frame: Sequence[int], *, fps: float, size: tuple[int, int],
                   seed: int, textured: bool = False, object_fraction: float = OBJECT_FRACTION,
                   boxes: list | None = None):
    """Yield uint8 frames; frame j moves in direction CLASSES[labels_per_frame[j]]. `boxes`, when
    given, receives each frame's object box `[x, y, w, h]` (see `write_motion_video`)."""
    w, h = size
    rng = np.random.default_rng(seed)
    bg = _background(rng, h, w, textured)
    side = max(4, int(object_fraction * min(w, h)))
    sprite = _sprite(rng, side, textured)
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    speed = rng.uniform(*SPEED_RANGE) * min(w, h) / fps  # px per frame
    noise = float(rng.uniform(3, 8))
    for label in labels_per_frame:
        if boxes is not None:
            boxes.append([float(x), float(y), float(side), float(side)])
        yield _render(bg, sprite, x, y, rng, noise)
        dx, dy = DIRECTIONS[CLASSES[label]]
        x, y = (x + dx * speed) % w, (y + dy * speed) % h


def write_motion_video(path: str, label: int, *, seconds: float, fps: float = 30,
                       size: tuple[int, int] = (64, 48), gop: int = 30, seed: int = 0,
                       textured: bool = False, object_fraction: float = OBJECT_FRACTION) -> list[list[float]]:
    """Write one H.264 MP4 (local path or URI) whose object moves in direction CLASSES[label].

    Returns the object's box per frame, `[x, y, w, h]` in pixels (top-left corner at sub-pixel
    precision; the object wraps around the frame edges, so `x + w` may pass the width: the part
    beyond it shows at the left, and likewise for y)."""
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in [0, {len(CLASSES)}), got {label}")
    if not 0 < object_fraction <= 1:
        raise ValueError(f"object_fraction must be in (0, 1], got {object_fraction}")
    _check_size(size)
    n = max(1, round(seconds * fps))
    boxes: list[list[float]] = []
    _encode(path, _motion_frames([label] * n, fps=fps, size=size, seed=seed, textured=textured,
                                 object_fraction=object_fraction, boxes=boxes), fps=fps, size=size, gop=gop)
    return boxes


def box_mask(box: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """Fraction of each pixel [H, W] (float32 in [0, 1]) that a box `[x, y, w, h]` from
    `write_motion_video` covers, wrapping around the frame edges as the object does."""
    width, height = size
    x, y, bw, bh = box

    def cover(start: float, length: float, n: int) -> np.ndarray:
        edges = np.arange(n + 1, dtype=np.float64)
        out = np.zeros(n)
        for shift in (-n, 0, n):  # the wrapped copies
            lo, hi = start + shift, start + shift + length
            out += np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, 1)
        return np.minimum(out, 1.0)

    return np.outer(cover(y, bh, height), cover(x, bw, width)).astype(np.float32)


def write_long_video(path: str, segment_labels: list[int], *, segment_seconds: float,
                     fps: float = 15, size: tuple[int, int] = (64, 48), seed: int = 0,
                     gop: int = 60, textured: bool = False) -> None:
    """Write a video of consecutive segments, segment k moving in CLASSES[segment_labels[k]].

    Segment k covers [k * segment_seconds, (k + 1) * segment_seconds).
    """
    if not segment_labels or any(not 0 <= lab < len(CLASSES) for lab in segment_labels):
        raise ValueError(f"segment labels must be in [0, {len(CLASSES)}): {segment_labels}")
    _check_size(size)
    per_seg = max(1, round(segment_seconds * fps))
    labels = [lab for lab in segment_labels for _ in range(per_seg)]
    _encode(path, _motion_frames(labels, fps=fps, size=size, seed=seed, textured=textured),
            fps=fps, size=size, gop=gop)


def _write_csv(uri: str, header: list[str], rows: list[list]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    storage.write_bytes_atomic(uri, text.getvalue().encode("utf-8"))


def split_sizes(videos: int, val_fraction: float = 0.25) -> tuple[list[int], list[int]]:
    """(videos per class, of which in val.csv) of `make_corpus(videos=..., val_fraction=...)`."""
    per_class = [len(range(c, videos, len(CLASSES))) for c in range(len(CLASSES))]
    n_val = [min(n - 1, max(1, round(n * val_fraction))) if val_fraction > 0 and n > 1 else 0
             for n in per_class]
    return per_class, n_val


def make_corpus(output_uri: str, *, videos: int, long_videos: int = 0, seconds: float = 2.0,
                size: tuple[int, int] = (64, 48), seed: int = 0, fps: float = 30,
                val_fraction: float = 0.25, long_segments: int = 4, segment_seconds: float = 15.0,
                long_size: tuple[int, int] = (64, 48), long_fps: float = 15, textured: bool = False,
                object_fraction: float = OBJECT_FRACTION) -> str:
    """Write a synthetic corpus under `output_uri` (folder or any fsspec URI); return train.csv's URI.

    Layout: `videos/clip_XXXXX.mp4` (classes balanced, round-robin), `train.csv` / `val.csv`
    (`path,label,video_id`, paths relative to the manifest, labels as class names; the last
    `val_fraction` of each class's videos, at least one when a class has two or more, go to val), `long.csv` (`path,label,video_id,segments`, where
    segments is a JSON list of [start_sec, end_sec, label_name] and label the class covering the
    most time), `labels.json` (class names in `CLASSES` order), `boxes.json` (video_id -> the
    object's box `[x, y, w, h]` in every frame of the short videos, see `write_motion_video`).
    """
    if videos < 0 or long_videos < 0:
        raise ValueError("videos and long_videos must be >= 0")
    from pipeline.data.manifest import LabelMap, write_labels

    rng = np.random.default_rng(seed)
    train, val, long_rows, boxes = [], [], [], {}
    per_class, n_val = split_sizes(videos, val_fraction)
    for i in range(videos):
        label = i % len(CLASSES)
        vid = f"clip_{i:05d}"
        rel = f"videos/{vid}.mp4"
        boxes[vid] = write_motion_video(storage.join(output_uri, rel), label, seconds=seconds, fps=fps, size=size,
                                        seed=int(rng.integers(2**31)), textured=textured,
                                        object_fraction=object_fraction)
        row = [rel, CLASSES[label], vid]
        in_val = i // len(CLASSES) >= per_class[label] - n_val[label]  # last ones of each class
        (val if in_val else train).append(row)
    for j in range(long_videos):
        labels = [int(x) for x in rng.integers(0, len(CLASSES), size=long_segments)]
        vid = f"long_{j:05d}"
        rel = f"videos/{vid}.mp4"
        write_long_video(storage.join(output_uri, rel), labels, segment_seconds=segment_seconds,
                         fps=long_fps, size=long_size, seed=int(rng.integers(2**31)), textured=textured)
        segments = [[k * segment_seconds, (k + 1) * segment_seconds, CLASSES[lab]]
                    for k, lab in enumerate(labels)]
        majority = max(labels, key=lambda c: (labels.count(c), -labels.index(c)))  # ties: earliest
        long_rows.append([rel, CLASSES[majority], vid, json.dumps(segments)])
    header = ["path", "label", "video_id"]
    _write_csv(storage.join(output_uri, "train.csv"), header, train)
    _write_csv(storage.join(output_uri, "val.csv"), header, val)
    if long_videos:
        _write_csv(storage.join(output_uri, "long.csv"), header + ["segments"], long_rows)
    write_labels(storage.join(output_uri, "labels.json"), LabelMap(tuple(CLASSES)))
    storage.write_bytes_atomic(storage.join(output_uri, "boxes.json"), json.dumps(boxes).encode("utf-8"))
    return storage.join(output_uri, "train.csv")
