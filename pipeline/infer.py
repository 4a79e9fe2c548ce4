"""Long-video inference on Ray core: decode tasks -> cross-video batches -> model actors.

    result = run_inference(checkpoint_uri, videos, output_uri, InferConfig(cover=True))

Data flow (SPEC §3, HowTo100M protocol):

1. One CPU task per video (`decode_video_task`, `num_cpus=decode_num_cpus`): probe, sample clip
   spans (`cover_clips`: non-overlapping clips covering the whole video, or `uniform_clips`: K
   clips), frame-exact seek decode of only the wanted frames, short-side resize and crop(s).
   It returns two objects: small metadata (clip times, duration, error) and the uint8 clips
   `[K, V, T, S, S, 3]` (V = 1 or 3 crops). The driver only ever reads the metadata.
2. The driver packs clips of any videos into fixed-size batches and sends each batch as a list
   of `(clips_ref, clip_indices)` to the least loaded model actor (`ClipScorer`: one per GPU, or
   on CPU), which fetches the frames straight from the object store, loads the model once and
   returns clip logits `[B, C]` (crop logits averaged).
3. When every clip of a video is scored its scores are aggregated (`pipeline.aggregate`) into
   one output row (top-k + per-clip timeline); rows are written in Parquet part files
   `parts/part-<hash of video ids>.parquet`, each written atomically, then merged into
   `predictions.parquet` (+ `predictions.jsonl`), `errors.parquet`, `summary.json`,
   `labels.json`, and `plots/<video_id>.png` with `plot=True`.

Backpressure: at most `max_videos_in_flight` videos are decoding or decoded-but-not-scored, and
at most `max_batches_per_actor` batches are queued on each actor (`ray.wait` on both), so the
memory held is bounded whatever the corpus size. Re-running skips the videos that already have
an `ok` row in a part file; every input video gets exactly one row (an error row when its video
is missing or corrupt: status "error", stage, error).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import posixpath
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from pipeline import aggregate as agg
from pipeline import storage
from pipeline.plots import plot_timeline

log = logging.getLogger(__name__)

PARTS_DIR = "parts"
PLOTS_DIR = "plots"


@dataclass
class InferConfig:
    """Inference settings. `None` sizes come from the model's config (frames, image size)."""

    num_frames: int | None = None  # frames per clip (None: the model's)
    sampling_rate: int = 32  # source frames between sampled frames at 30 fps (SPEC §3)
    cover: bool = True  # True: non-overlapping clips covering the whole video (HowTo100M)
    clips: int = 1  # with cover=False: K uniformly spaced clips
    crops: Literal[1, 3] = 1  # 1 centre crop, or 3 crops along the long side (scores averaged)
    short_side: int | None = None  # resize short side to this (None: crop_size)
    crop_size: int | None = None  # None: the model's image size
    aggregate: Literal["mean_logits", "mean_probs", "max"] = "mean_logits"
    top_k: int = 5
    batch_size: int = 8  # clips per actor call (each clip is `crops` model inputs)
    actors: int = 0  # model actors; 0: one per GPU in the cluster, else 1
    actor_gpus: float | None = None  # GPUs per actor; None: 1 when the cluster has GPUs
    actor_cpus: float = 1.0
    torch_threads: int = 0  # torch threads in a CPU actor; 0: actor_cpus
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype on CUDA
    decode_num_cpus: float = 1.0
    clips_per_decode: int = 8  # clips decoded per decode() call (bounds native-size frames held)
    max_videos_in_flight: int = 0  # decoding + waiting for scores; 0: 2 x decode slots + 2
    max_batches_per_actor: int = 2  # queued actor calls per actor (>= 2 keeps actors fed)
    part_size: int = 16  # finished videos per part file
    labels: str | None = None  # labels.json URI; None: labels.json beside the checkpoint
    jsonl: bool = False
    plot: bool = False

    def __post_init__(self) -> None:
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {self.crops}")
        if self.aggregate not in agg.AGGREGATES:
            raise ValueError(f"aggregate must be one of {agg.AGGREGATES}, got {self.aggregate!r}")
        for name in ("sampling_rate", "clips", "top_k", "batch_size", "clips_per_decode",
                     "max_batches_per_actor", "part_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_frames", "short_side", "crop_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if self.short_side is not None and self.crop_size is not None and self.short_side < self.crop_size:
            raise ValueError(f"short_side {self.short_side} < crop_size {self.crop_size}")


@dataclass(frozen=True)
class ClipSpec:
    """What a decode task produces (all sizes resolved)."""

    num_frames: int
    sampling_rate: int
    cover: bool
    clips: int
    crops: int
    short_side: int
    crop_size: int
    clips_per_decode: int = 8


@dataclass
class InferResult:
    """Counts, timings and where the outputs are."""

    output: str
    predictions: str
    total: int = 0
    ok: int = 0
    errors: int = 0
    skipped: int = 0  # already done by an earlier run
    processed: int = 0  # videos finished in this run
    clips: int = 0  # clips scored in this run
    wall_s: float = 0.0
    decode_s: float = 0.0  # summed decode-task time
    model_busy_s: list[float] = field(default_factory=list)  # per actor
    actor_idle: float = 0.0  # mean over actors of 1 - busy / (time since the actor was ready)
    parts_written: int = 0
    top1: float | None = None  # accuracy over videos whose manifest gives a label
    peak_videos_in_flight: int = 0  # most videos decoding or holding clips at once
    peak_batches_per_actor: int = 0  # most calls queued on one actor at once


# ----------------------------------------------------------------------------- inputs


def list_videos(videos_uri: str, howto100m_template: str | None = None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input videos from a manifest file or a folder/prefix of videos.

    Returns (items `{video_id, uri, target}`, error rows for bad manifest lines). Duplicate
    video ids keep the first occurrence. A folder's video ids are paths relative to it,
    without the extension. `howto100m_template` reads a HowTo100M task CSV
    (`video_id,task_id`) with paths such as `s3://bucket/howto100m/{video_id}.mp4`.
    """
    from pipeline.data.manifest import TABLE_SUFFIXES, VIDEO_SUFFIXES, load_manifest

    errors: list[dict[str, Any]] = []
    if howto100m_template or videos_uri.lower().rstrip("/").endswith(TABLE_SUFFIXES):
        man = load_manifest(videos_uri, howto100m_template=howto100m_template)
        items = [{"video_id": str(r["video_id"]), "uri": r["path"], "target": r.get("label_name"),
                  "segments": r.get("segments")} for r in man.rows]
        for e in man.errors:
            errors.append(error_row(_stem(e["uri"]), e["uri"], e["stage"], e["error"]))
    else:
        root = storage.filesystem(videos_uri)[1].rstrip("/")
        items = []
        for uri in storage.list_files(videos_uri, VIDEO_SUFFIXES):
            rel = storage.filesystem(uri)[1][len(root):].lstrip("/")
            items.append({"video_id": posixpath.splitext(rel)[0], "uri": uri, "target": None})
        if not items and not storage.exists(videos_uri):
            raise FileNotFoundError(f"--videos: nothing at {videos_uri}")
    seen: set[str] = set()
    unique = []
    for it in items:
        if it["video_id"] in seen:
            log.warning("duplicate video_id %s (%s): kept the first", it["video_id"], it["uri"])
            continue
        seen.add(it["video_id"])
        unique.append(it)
    bad = []
    for e in errors:  # one row per id, and never one that shadows a good video
        if e["video_id"] not in seen:
            seen.add(e["video_id"])
            bad.append(e)
    return unique, bad


def _stem(uri: str) -> str:
    return posixpath.splitext(posixpath.basename(uri.rstrip("/")))[0] or uri


def read_label_names(labels_uri: str | None, checkpoint: str, num_classes: int) -> list[str]:
    """Class names: the given labels file, else `labels.json` beside the checkpoint, else ids."""
    from pipeline.data.manifest import LABELS_FILE, read_labels

    candidates = [labels_uri] if labels_uri else [_sibling(checkpoint, LABELS_FILE)]
    for uri in candidates:
        if uri and storage.exists(uri):
            names = list(read_labels(uri).names)
            if len(names) != num_classes:
                raise ValueError(f"{uri}: {len(names)} labels for a model with {num_classes} classes")
            return names
        if labels_uri:
            raise FileNotFoundError(f"labels file not found: {labels_uri}")
    return [str(i) for i in range(num_classes)]


def _sibling(uri: str, name: str) -> str:
    if storage.is_local(uri) and not uri.startswith("file://"):
        return os.path.join(os.path.dirname(os.path.abspath(uri)), name)
    return uri.rsplit("/", 1)[0] + "/" + name


# ----------------------------------------------------------------------------- decode (pure)


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


@ray.remote(num_returns=2)
def decode_video_task(item: dict[str, Any], spec: ClipSpec) -> tuple[dict[str, Any], np.ndarray | None]:
    """Ray task around `video_clips`: never raises; a failure is `meta["error"]`, clips None."""
    _one_thread()
    t0 = time.perf_counter()
    try:
        meta, clips = video_clips(item["uri"], spec)
        meta["error"] = None
    except Exception as e:  # noqa: BLE001 - any failure of one video becomes its error row
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


# ----------------------------------------------------------------------------- model actors


@ray.remote
class ClipScorer:
    """Holds one model (loaded once) and scores batches of clips from the object store."""

    def __init__(self, checkpoint: str, device: str = "auto", threads: int = 1,
                 precision: str = "fp32"):
        import torch

        from pipeline.model import load

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.device = torch.device(device)
        self.model = load(checkpoint).to(self.device)
        self.precision = precision
        cfg = self.model.config
        self.mean, self.std = tuple(getattr(cfg, "mean", (0.45,) * 3)), tuple(getattr(cfg, "std", (0.225,) * 3))

    def info(self) -> dict[str, Any]:
        """The model facts the driver needs (classes, frames, image size, device)."""
        cfg = self.model.config
        return {"num_classes": int(cfg.num_classes), "num_frames": int(getattr(cfg, "num_frames", 8)),
                "image_size": int(getattr(cfg, "image_size", 224)), "family": self.model.family,
                "device": str(self.device)}

    def score(self, parts: list[tuple[Any, list[int]]]) -> tuple[np.ndarray, float]:
        """Clip logits `[B, C]` (float32) for `[(clips_ref, clip_indices), ...]`; busy seconds."""
        import torch
        from einops import rearrange

        from pipeline.model.forward import to_model_input

        t0 = time.perf_counter()
        arrays = ray.get([ref for ref, _ in parts])
        clips = np.concatenate([a[idx] for a, (_, idx) in zip(arrays, parts)])  # [B, V, T, S, S, 3]
        views = clips.shape[1]
        x = torch.from_numpy(rearrange(clips, "b v t h w c -> (b v) t h w c"))
        x = x.to(self.device, non_blocking=True)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        amp = (torch.autocast("cuda", dtype=dtype) if dtype is not None and self.device.type == "cuda"
               else contextlib.nullcontext())
        with torch.inference_mode(), amp:
            logits = self.model(to_model_input(x, self.mean, self.std))  # [(B V), C]
        logits = rearrange(logits.float(), "(b v) c -> b v c", v=views).mean(dim=1)  # [B, C]
        out = logits.cpu().numpy().astype(np.float32)
        return out, time.perf_counter() - t0


# ----------------------------------------------------------------------------- rows


def error_row(video_id: str, uri: str, stage: str, error: str, target: str | None = None) -> dict[str, Any]:
    """An output row for a video that could not be classified."""
    return {"video_id": video_id, "uri": uri, "status": "error", "stage": stage, "error": error,
            "target": target, "duration": None, "fps": None, "num_clips": 0, "num_padded": 0,
            "label": None, "label_id": None, "score": None, "top_labels": [], "top_ids": [],
            "top_scores": [], "timeline": []}


def prediction_row(item: dict[str, Any], meta: dict[str, Any], clip_logits: np.ndarray,
                   names: Sequence[str], method: str, k: int) -> dict[str, Any]:
    """The output row of a classified video from its clip logits `[K, C]`."""
    scores = agg.aggregate(clip_logits, method)
    top = agg.top_k(scores, k, names)
    return {
        "video_id": item["video_id"], "uri": item["uri"], "status": "ok", "stage": None, "error": None,
        "target": item.get("target"), "duration": meta["duration"], "fps": meta["fps"],
        "num_clips": int(clip_logits.shape[0]), "num_padded": int(meta["num_padded"]),
        "label": top[0][1], "label_id": top[0][0], "score": top[0][2],
        "top_labels": [n for _, n, _ in top], "top_ids": [i for i, _, _ in top],
        "top_scores": [s for _, _, s in top],
        "timeline": agg.timeline(meta["starts"], meta["ends"], clip_logits),
    }


SCHEMA = pa.schema([
    ("video_id", pa.string()), ("uri", pa.string()), ("status", pa.string()),
    ("stage", pa.string()), ("error", pa.string()), ("target", pa.string()),
    ("duration", pa.float64()), ("fps", pa.float64()), ("num_clips", pa.int32()),
    ("num_padded", pa.int32()), ("label", pa.string()), ("label_id", pa.int32()),
    ("score", pa.float32()), ("top_labels", pa.list_(pa.string())),
    ("top_ids", pa.list_(pa.int32())), ("top_scores", pa.list_(pa.float32())),
    ("timeline", pa.list_(pa.struct([("start_sec", pa.float64()), ("end_sec", pa.float64()),
                                     ("scores", pa.list_(pa.float32()))]))),
])


def part_name(video_ids: Sequence[str]) -> str:
    """`part-<16 hex of sha1 over the sorted ids>.parquet`: the same videos give the same name."""
    h = hashlib.sha1("\n".join(sorted(video_ids)).encode("utf-8")).hexdigest()[:16]
    return f"part-{h}.parquet"


def write_part(output: str, rows: list[dict[str, Any]]) -> str:
    """Write rows as one Parquet part file, atomically; returns its URI."""
    uri = storage.join(output, PARTS_DIR, part_name([r["video_id"] for r in rows]))
    storage.write_parquet_atomic(uri, pa.Table.from_pylist(rows, schema=SCHEMA))
    return uri


def list_parts(output: str) -> list[str]:
    """Finished part files (temporary names of unfinished writes are ignored)."""
    return [u for u in storage.list_files(storage.join(output, PARTS_DIR), [".parquet"])
            if posixpath.basename(u).startswith("part-")]


def done_video_ids(output: str) -> set[str]:
    """Ids of videos with an `ok` row in an existing part file (errors are retried)."""
    done: set[str] = set()
    for uri in list_parts(output):
        t = storage.read_parquet(uri, columns=["video_id", "status"])
        for vid, status in zip(t.column("video_id").to_pylist(), t.column("status").to_pylist()):
            if status == "ok":
                done.add(vid)
    return done


def _choose_rows(parts: list[str], wanted: set[str]) -> dict[str, list[int]]:
    """For each wanted video one row `{part uri: [row numbers]}`: its first `ok` row if any,
    else its last error row (a rerun retries errors; a success wins over any failure)."""
    best: dict[str, tuple[bool, int, int]] = {}  # video_id -> (is ok, part index, row)
    for p, uri in enumerate(parts):
        t = storage.read_parquet(uri, columns=["video_id", "status"])
        for r, (vid, status) in enumerate(zip(t.column("video_id").to_pylist(),
                                              t.column("status").to_pylist())):
            if vid not in wanted or (vid in best and best[vid][0]):
                continue
            best[vid] = (status == "ok", p, r)
    chosen: dict[str, list[int]] = {}
    for _, p, r in sorted(best.values(), key=lambda b: (b[1], b[2])):
        chosen.setdefault(parts[p], []).append(r)
    return chosen


def merge_parts(output: str, video_ids: Sequence[str], *, jsonl: bool = False) -> dict[str, int]:
    """Merge the part files into `predictions.parquet`: exactly one row per id in `video_ids`
    that has a row in some part (see `_choose_rows`), plus `errors.parquet` (uri, stage, error)
    and, with `jsonl`, `predictions.jsonl`. Streams one part at a time. Returns counts (rows,
    ok, errors, and with_target / correct: rows whose manifest label is known / equals top-1)."""
    chosen = _choose_rows(list_parts(output), set(video_ids))
    counts = {"rows": 0, "ok": 0, "errors": 0, "with_target": 0, "correct": 0}
    errors: list[pa.Table] = []
    with contextlib.ExitStack() as stack:
        pf = stack.enter_context(storage.open_atomic(storage.join(output, "predictions.parquet")))
        jf = stack.enter_context(storage.open_atomic(storage.join(output, "predictions.jsonl"))) if jsonl else None
        writer = stack.enter_context(pq.ParquetWriter(pf, SCHEMA))
        for uri, rows in chosen.items():
            t = storage.read_parquet(uri).select(SCHEMA.names).cast(SCHEMA)
            t = t.take(pa.array(rows, pa.int64()))
            writer.write_table(t)
            if jf is not None:
                for row in t.to_pylist():
                    jf.write((json.dumps(row) + "\n").encode("utf-8"))
            labels, targets = t.column("label").to_pylist(), t.column("target").to_pylist()
            counts["with_target"] += sum(x is not None for x in targets)
            counts["correct"] += sum(x is not None and x == y for x, y in zip(targets, labels))
            bad = t.filter(pa.compute.equal(t.column("status"), "error"))
            errors.append(bad.select(["uri", "stage", "error"]))
            counts["rows"] += t.num_rows
            counts["errors"] += bad.num_rows
    counts["ok"] = counts["rows"] - counts["errors"]
    err_uri = storage.join(output, "errors.parquet")
    if counts["errors"]:
        storage.write_parquet_atomic(err_uri, pa.concat_tables(errors))
    else:
        storage.remove(err_uri)
    return counts


# ----------------------------------------------------------------------------- plots




@ray.remote(num_cpus=0.25)
def plot_task(row: dict[str, Any], names: Sequence[str], uri: str, segments: Any = None) -> None:
    """Ray task around `plot_timeline` (keeps matplotlib off the driver)."""
    plot_timeline(row, names, uri, segments=segments)


def plot_uri(output: str, video_id: str) -> str:
    """Where the timeline PNG of a video goes (ids with `/` keep their folders)."""
    safe = "".join(c if c.isalnum() or c in "-_./" else "_" for c in video_id).strip("/")
    return storage.join(output, PLOTS_DIR, safe + ".png")


# ----------------------------------------------------------------------------- driver


@dataclass
class _Video:
    item: dict[str, Any]
    meta: dict[str, Any]
    clips_ref: Any
    logits: np.ndarray  # [K, C], filled as batches come back
    remaining: int


def _cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0))


def make_actors(checkpoint: str, cfg: InferConfig, device: str = "auto") -> list[Any]:
    """Start the model actors (one per GPU by default, else one CPU actor)."""
    gpus = _cluster_gpus()
    per_actor = cfg.actor_gpus if cfg.actor_gpus is not None else (1.0 if gpus and device != "cpu" else 0.0)
    n = cfg.actors or (max(1, int(gpus // per_actor)) if per_actor else 1)
    threads = cfg.torch_threads or max(1, int(cfg.actor_cpus))
    dev = device if device != "auto" else ("cuda" if per_actor else "cpu")
    return [ClipScorer.options(num_cpus=cfg.actor_cpus, num_gpus=per_actor, max_restarts=2,
                               max_task_retries=2).remote(
        checkpoint, dev, threads, cfg.precision) for _ in range(n)]


def resolve_spec(cfg: InferConfig, info: dict[str, Any]) -> ClipSpec:
    """Fill the sizes left to the model (frames, crop size) from the actor's `info()`."""
    crop = cfg.crop_size or info["image_size"]
    return ClipSpec(num_frames=cfg.num_frames or info["num_frames"], sampling_rate=cfg.sampling_rate,
                    cover=cfg.cover, clips=cfg.clips, crops=cfg.crops,
                    short_side=cfg.short_side or crop, crop_size=crop,
                    clips_per_decode=cfg.clips_per_decode)


def run_inference(checkpoint: str, videos: str | list[dict[str, Any]], output: str,
                  cfg: InferConfig | None = None, *, device: str = "auto",
                  actors: list[Any] | None = None, howto100m_template: str | None = None) -> InferResult:
    """Classify every video (a manifest/folder URI or items `{video_id, uri, target}`).

    Writes parts, then `predictions.parquet` etc. under `output` (see module doc). Videos that
    already have an `ok` row under `output` are skipped. `actors` reuses started `ClipScorer`s.
    """
    from pipeline.data.manifest import LABELS_FILE, LabelMap, write_labels

    cfg = cfg or InferConfig()
    t_start = time.perf_counter()
    if isinstance(videos, str):
        items, bad_rows = list_videos(videos, howto100m_template)
    else:
        items, bad_rows = [dict(v) for v in videos], []
    order = [it["video_id"] for it in items] + [r["video_id"] for r in bad_rows]
    items_by_id = {it["video_id"]: it for it in items}
    done = done_video_ids(output)
    pending = deque(it for it in items if it["video_id"] not in done)
    result = InferResult(output=output, predictions=storage.join(output, "predictions.parquet"),
                         total=len(order), skipped=len(items) - len(pending))

    own_actors = actors is None
    actors = actors if actors is not None else make_actors(checkpoint, cfg, device)
    infos = ray.get([a.info.remote() for a in actors])
    t_ready = time.perf_counter()
    info = infos[0]
    names = read_label_names(cfg.labels, checkpoint, info["num_classes"])
    spec = resolve_spec(cfg, info)
    write_labels(storage.join(output, LABELS_FILE), LabelMap(tuple(names)))

    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cfg.decode_num_cpus))
    max_videos = cfg.max_videos_in_flight or 2 * slots + 2
    decode_opts = {"num_cpus": cfg.decode_num_cpus}

    decoding: dict[Any, tuple[dict[str, Any], Any]] = {}  # meta ref -> (item, clips ref)
    open_videos: dict[str, _Video] = {}
    clip_queue: deque[tuple[str, int]] = deque()  # (video_id, clip index)
    calls: dict[Any, tuple[int, list[tuple[str, int]]]] = {}  # result ref -> (actor, clips)
    load = [0] * len(actors)
    busy = [0.0] * len(actors)
    rows: list[dict[str, Any]] = list(bad_rows)  # finished, not yet in a part file
    plot_refs: list[Any] = []

    def finish(row: dict[str, Any]) -> None:
        rows.append(row)
        if cfg.plot and row["status"] == "ok":
            plot_refs.append(plot_task.remote(row, names, plot_uri(output, row["video_id"]),
                                              items_by_id[row["video_id"]].get("segments")))

    def flush_rows(final: bool = False) -> None:
        """Write full parts (everything when final); a part on disk implies its plots are."""
        while rows and (len(rows) >= cfg.part_size or final):
            chunk, rows[:] = rows[:cfg.part_size], rows[cfg.part_size:]
            if plot_refs:
                ray.get(plot_refs)
                plot_refs.clear()
            write_part(output, chunk)
            result.parts_written += 1
            result.processed += len(chunk)

    def send_batches() -> None:
        while clip_queue:
            a = min(range(len(actors)), key=lambda i: load[i])
            full = len(clip_queue) >= cfg.batch_size
            # a partial batch goes only to an idle actor, or when nothing else can arrive
            if load[a] >= cfg.max_batches_per_actor or not (full or load[a] == 0 or not decoding):
                return
            batch = [clip_queue.popleft() for _ in range(min(cfg.batch_size, len(clip_queue)))]
            groups: dict[str, list[int]] = {}
            for vid, k in batch:
                if vid in open_videos:  # else the video already failed
                    groups.setdefault(vid, []).append(k)
            if not groups:
                continue
            parts = [(open_videos[vid].clips_ref, ks) for vid, ks in groups.items()]
            ref = actors[a].score.remote(parts)
            calls[ref] = (a, [(vid, k) for vid, ks in groups.items() for k in ks])
            load[a] += 1
            result.peak_batches_per_actor = max(result.peak_batches_per_actor, load[a])

    def submit_decodes() -> None:
        while pending and len(decoding) + len(open_videos) < max_videos:
            item = pending.popleft()
            meta_ref, clips_ref = decode_video_task.options(**decode_opts).remote(item, spec)
            decoding[meta_ref] = (item, clips_ref)
        result.peak_videos_in_flight = max(result.peak_videos_in_flight, len(decoding) + len(open_videos))

    def on_decoded(ref: Any) -> None:
        item, clips_ref = decoding.pop(ref)
        try:
            meta = ray.get(ref)
        except ray.exceptions.RayError as e:  # the worker died (e.g. out of memory)
            meta = {"error": f"{type(e).__name__}: {e}", "stage": "decode.worker"}
        result.decode_s += meta.get("decode_s", 0.0)
        if meta.get("error"):
            finish(error_row(item["video_id"], item["uri"], meta["stage"], meta["error"], item.get("target")))
            return
        k = len(meta["starts"])
        open_videos[item["video_id"]] = _Video(item, meta, clips_ref,
                                               np.zeros((k, info["num_classes"]), np.float32), k)
        clip_queue.extend((item["video_id"], j) for j in range(k))

    def on_scored(ref: Any) -> None:
        a, batch = calls.pop(ref)
        load[a] -= 1
        try:
            logits, seconds = ray.get(ref)
            busy[a] += seconds
        except ray.exceptions.RayError as e:  # the actor failed past its restarts
            logits, err = None, f"{type(e).__name__}: {e}"
        for j, (vid, k) in enumerate(batch):
            v = open_videos.get(vid)
            if v is None:  # already failed by an earlier batch
                continue
            if logits is None:
                finish(error_row(vid, v.item["uri"], "model", err, v.item.get("target")))
                del open_videos[vid]
                continue
            v.logits[k] = logits[j]
            v.remaining -= 1
            result.clips += 1
            if v.remaining == 0:
                finish(prediction_row(v.item, v.meta, v.logits, names, cfg.aggregate, cfg.top_k))
                del open_videos[vid]  # drops the clips ref: the object store frees it

    while True:
        submit_decodes()
        send_batches()
        if not decoding and not calls:
            if clip_queue:  # cannot happen: send_batches flushes when nothing is in flight
                raise RuntimeError("clips queued with no work in flight")
            if not pending:
                break
            continue
        ready, _ = ray.wait(list(decoding) + list(calls), num_returns=1)
        for ref in ready:
            on_decoded(ref) if ref in decoding else on_scored(ref)
        flush_rows()
    t_end = time.perf_counter()
    flush_rows(final=True)
    counts = merge_parts(output, order, jsonl=cfg.jsonl)
    result.ok, result.errors = counts["ok"], counts["errors"]
    if counts["with_target"]:
        result.top1 = counts["correct"] / counts["with_target"]
    if own_actors:
        for a in actors:
            ray.kill(a)
    result.wall_s = t_end - t_start
    result.model_busy_s = busy
    window = max(t_end - t_ready, 1e-9)
    result.actor_idle = float(np.mean([max(0.0, 1.0 - b / window) for b in busy]))
    storage.write_json(storage.join(output, "summary.json"), {
        "checkpoint": checkpoint, "config": dataclasses.asdict(cfg), "clip_spec": dataclasses.asdict(spec),
        "model": info, "counts": {"videos": result.total, "ok": result.ok, "errors": result.errors,
                                  "skipped": result.skipped, "processed": result.processed},
        "top1": result.top1, "clips": result.clips, "wall_s": result.wall_s, "decode_s": result.decode_s,
        "model_busy_s": busy, "actor_idle": result.actor_idle,
    })
    return result
