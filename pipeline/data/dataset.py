"""Ray Data clip datasets: manifest rows -> decoded uint8 clips (the only ray import in data/).

    rows = read_manifest("s3://bucket/train.csv")
    ds = build_clip_dataset(rows, DataConfig(num_frames=8, crop_size=224), mode="train", seed=0,
                            epochs=10, error_uri="s3://bucket/run/errors")

Pipeline: rows -> `ray.data.from_items` (one block per `batch_size` rows, shuffled per epoch
for train) -> `map_batches(_decode_batch, num_cpus=cfg.num_cpus, memory=cfg.memory)`; each row is
opened through `pipeline.storage.open_uri`, probed, sampled (pure `sampling` functions), decoded
frame-exactly with seeking (`decode.decode_with_report`, one call per video for all its clips),
and transformed (`transforms`). Output columns, one row per view (clip x crop):

    frames      uint8 [T, H, W, 3]   (ArrowTensorTypeV2; H = W = crop_size)
    label       int64                (-1 when the manifest had no labels)
    video_id    str
    clip_index  int64                temporal clip number within the video (0 for train)
    crop_index  int64                spatial crop number (0 for train / centre crop)
    start_sec   float64              clip span in the video, seconds from its first frame
    end_sec     float64
    num_padded  int64                frames repeated because the video / segment was too short
    epoch       int64

Modes: "train": one random clip per video, random short-side jitter, random crop, flip with
p = 0.5. "val" / "test": `clips_per_video` uniform clips (or, with `eval_sampling="cover"`,
non-overlapping clips covering the video) x `test_crops` (1 = centre, 3 = three crops).

Determinism: every random choice for a row comes from
`np.random.default_rng([seed, epoch, row_key])`, where `row_key` is a stable hash of the row's
path, video_id and segment; it does not depend on batching, workers or order. Same seed and
epoch -> the same clips and crops per video; another epoch -> new ones.

Epochs: re-iterating one Dataset replays the same epoch. For new random clips every epoch either
build a dataset per epoch (`epoch=e`), or build one streaming dataset over several epochs
(`epochs=E`: E reshuffled passes over the rows, each with its own clips, tagged with `epoch`) and
iterate it once.

Errors: a bad row never raises. It is dropped from the clips and, when `error_uri` is given,
recorded there as a Parquet part file `error_uri/part-<content hash>.parquet` with columns
(uri, stage, error), written atomically by the decode task; the name is a hash of the content,
so a re-executed task rewrites the same file. `collect_errors(error_uri)` merges (and de-dups)
the parts. Without `error_uri` failures are only logged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np
import pyarrow as pa
import ray
from einops import rearrange

from pipeline import storage
from pipeline.data import decode as vdecode
from pipeline.data import sampling, transforms

log = logging.getLogger(__name__)

Mode = Literal["train", "val", "test"]
ERROR_SCHEMA = pa.schema([("uri", pa.string()), ("stage", pa.string()), ("error", pa.string())])
OUTPUT_COLUMNS = ("frames", "label", "video_id", "clip_index", "crop_index", "start_sec",
                  "end_sec", "num_padded", "epoch")


@dataclass
class DataConfig:
    """How clips are sampled, decoded and cropped, and what each decode task reserves.

    train_short_side: short-side jitter range for train; None -> (256, 320) scaled by
    crop_size / 224. test_short_side: short side for val/test; None -> crop_size.
    crop_size: None (val/test only) keeps whole frames at the test short side.
    memory: bytes reserved per decode task (Ray's `memory` resource); 0 reserves nothing.
    read_block_size: bytes per ranged read from object storage (a seek costs at most one block).
    """

    num_frames: int = 8
    sampling_rate: int = 32
    crop_size: int | None = 224
    train_short_side: tuple[int, int] | None = None
    test_short_side: int | None = None
    clips_per_video: int = 1
    test_crops: int = 1
    eval_sampling: Literal["uniform", "cover"] = "uniform"
    hflip: bool = True
    decode_threads: int = 1
    num_cpus: float = 1.0
    memory: int = 512 * 1024 * 1024
    batch_size: int = 2
    read_block_size: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.num_frames <= 0 or self.sampling_rate <= 0:
            raise ValueError("num_frames and sampling_rate must be positive")
        if self.crop_size is not None and self.crop_size <= 0:
            raise ValueError("crop_size must be positive (or None)")
        if self.test_crops not in (1, 3):
            raise ValueError(f"test_crops must be 1 or 3, got {self.test_crops}")
        if self.clips_per_video <= 0 or self.batch_size <= 0:
            raise ValueError("clips_per_video and batch_size must be positive")
        lo, hi = self.train_range()
        if self.crop_size is not None and (lo < self.crop_size or hi < lo):
            raise ValueError(f"train_short_side {(lo, hi)} must satisfy crop_size <= min <= max")
        if self.crop_size is not None and self.test_size() < self.crop_size:
            raise ValueError(f"test_short_side {self.test_size()} < crop_size {self.crop_size}")

    def train_range(self) -> tuple[int, int]:
        """The train short-side jitter range (explicit, or (256, 320) * crop_size / 224)."""
        if self.train_short_side is not None:
            return int(self.train_short_side[0]), int(self.train_short_side[1])
        crop = self.crop_size or 224
        return round(256 * crop / 224), round(320 * crop / 224)

    def test_size(self) -> int:
        """The val/test short side."""
        if self.test_short_side is not None:
            return int(self.test_short_side)
        if self.crop_size is None:
            raise ValueError("test_short_side is required when crop_size is None")
        return self.crop_size


# ---------------------------------------------------------------------------- per-row work (pure)


def row_key(row: dict[str, Any]) -> int:
    """Stable 63-bit key of a row (path, video_id, segment), independent of process and order."""
    text = f"{row['path']}\x1f{row.get('video_id')}\x1f{row.get('start_sec')}\x1f{row.get('end_sec')}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def row_rng(seed: int, epoch: int, row: dict[str, Any]) -> np.random.Generator:
    """The generator behind every random choice for one row in one epoch."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), row_key(row)])


def _segment_frames(row: dict[str, Any], info: vdecode.VideoInfo) -> tuple[int, int]:
    """[first, last) source frames of the row's segment (the whole video when none is given)."""
    first, last = 0, info.num_frames
    if row.get("start_sec") is not None:
        first = min(max(0, int(round(row["start_sec"] * info.fps))), info.num_frames)
    if row.get("end_sec") is not None:
        last = min(info.num_frames, int(round(row["end_sec"] * info.fps)))
    if last <= first:
        raise vdecode.DecodeError(
            "sample", f"segment [{row.get('start_sec')}, {row.get('end_sec')}] s holds no frames "
            f"of a {info.num_frames}-frame video at {info.fps:.3f} fps")
    return first, last


def _views(clip: np.ndarray, cfg: DataConfig, mode: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Spatial views of one decoded clip [T, H, W, 3] (already at its short side)."""
    if mode == "train":
        out = transforms.random_crop(clip, cfg.crop_size, rng) if cfg.crop_size else clip
        if cfg.hflip and rng.random() < 0.5:
            out = transforms.hflip(out)
        return [np.ascontiguousarray(out)]
    if cfg.crop_size is None:
        return [clip]
    if cfg.test_crops == 3:
        return [np.ascontiguousarray(c) for c in transforms.three_crops(clip, cfg.crop_size)]
    return [np.ascontiguousarray(transforms.center_crop(clip, cfg.crop_size))]


def video_clips(src: Any, row: dict[str, Any], cfg: DataConfig, *, mode: str, seed: int,
                epoch: int = 0) -> list[dict[str, Any]]:
    """All output rows (views) for one manifest row, decoding from `src` (path or file object).

    Pure (no ray): probe -> sample clips -> one seek-decode for all clips -> crops / flips.
    Raises `decode.DecodeError` (with a stage) for bad input.
    """
    rng = row_rng(seed, epoch, row)
    with vdecode.Video(src, threads=cfg.decode_threads) as video:  # one open for probe and decode
        return _clips_of(video, row, cfg, mode=mode, rng=rng, epoch=epoch)


def _clips_of(video: vdecode.Video, row: dict[str, Any], cfg: DataConfig, *, mode: str,
              rng: np.random.Generator, epoch: int) -> list[dict[str, Any]]:
    """`video_clips` on an open video."""
    info = video.info
    first, last = _segment_frames(row, info)
    total = last - first
    span = sampling.clip_span(cfg.num_frames, cfg.sampling_rate, info.fps)
    if mode == "train":
        spans = [sampling.random_clip(total, span, rng)]
        size = int(rng.integers(cfg.train_range()[0], cfg.train_range()[1] + 1))
    elif cfg.eval_sampling == "cover":
        spans = sampling.cover_clips(total, span)
        size = cfg.test_size()
    else:
        spans = sampling.uniform_clips(total, span, cfg.clips_per_video)
        size = cfg.test_size()
    picks = [sampling.clip_indices(s, e, cfg.num_frames, total) for s, e in spans]
    wanted = np.concatenate([idx for idx, _ in picks]) + first  # [K * T]
    frames, past_end = video.read(wanted.tolist(), size=size)
    clips = rearrange(frames, "(k t) h w c -> k t h w c", k=len(spans))
    past = _past_end_per_clip(wanted, past_end, len(spans))
    out = []
    for k, ((s, e), (_, padded)) in enumerate(zip(spans, picks)):
        for c, view in enumerate(_views(clips[k], cfg, mode, rng)):
            out.append({
                "frames": view, "label": int(row.get("label", -1)), "video_id": str(row["video_id"]),
                "clip_index": k, "crop_index": c,
                "start_sec": (first + s) / info.fps, "end_sec": (first + min(e, total)) / info.fps,
                "num_padded": min(cfg.num_frames, int(padded + past[k])), "epoch": int(epoch),
            })
    return out


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


def process_row(row: dict[str, Any], cfg: DataConfig, *, mode: str, seed: int,
                epoch: int = 0) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """Make a row's clips, opening remote videos through `pipeline.storage`; never raises.

    Local files are handed to PyAV by path (native I/O); remote ones as an fsspec file object
    read in `cfg.read_block_size` ranges. Returns (views, None) on success, or
    ([], {"uri", "stage", "error"}) on failure.
    """
    uri = str(row.get("path"))
    try:
        with contextlib.ExitStack() as stack:
            try:
                src = stack.enter_context(storage.open_for_reading(uri, block_size=cfg.read_block_size))
            except FileNotFoundError:
                return [], error_row(uri, "open", "file not found")
            except Exception as e:  # noqa: BLE001 - any storage failure is a row error
                return [], error_row(uri, "open", f"{type(e).__name__}: {e}")
            return video_clips(src, row, cfg, mode=mode, seed=seed, epoch=epoch), None
    except vdecode.DecodeError as e:
        return [], error_row(uri, e.stage, e.message)
    except Exception as e:  # noqa: BLE001 - never fail the job for one video
        return [], error_row(uri, "decode", f"{type(e).__name__}: {e}")


def error_row(uri: str, stage: str, error: str) -> dict[str, str]:
    """One row of the error table."""
    return {"uri": str(uri), "stage": str(stage), "error": str(error)}


# ---------------------------------------------------------------------------- error table


def errors_table(errors: Iterable[dict[str, str]]) -> pa.Table:
    """Error rows -> an Arrow table (uri, stage, error), sorted and de-duplicated."""
    uniq = sorted({(e["uri"], e["stage"], e["error"]) for e in errors})
    cols = list(zip(*uniq)) if uniq else [(), (), ()]
    return pa.table({"uri": list(cols[0]), "stage": list(cols[1]), "error": list(cols[2])},
                    schema=ERROR_SCHEMA)


def write_errors(error_uri: str, errors: Sequence[dict[str, str]]) -> str | None:
    """Write error rows as one part file under `error_uri` (name = content hash); None if empty."""
    if not errors:
        return None
    table = errors_table(errors)
    digest = hashlib.sha1(repr(table.to_pydict()).encode()).hexdigest()[:16]
    uri = storage.join(error_uri, f"part-{digest}.parquet")
    storage.write_parquet_atomic(uri, table)
    return uri


def collect_errors(error_uri: str) -> pa.Table:
    """Merge every error part file under `error_uri` into one de-duplicated table."""
    rows: list[dict[str, str]] = []
    for part in storage.list_files(error_uri, (".parquet",)):
        rows.extend(storage.read_parquet(part).to_pylist())
    return errors_table(rows)


# ---------------------------------------------------------------------------- Ray Data


def _stack_frames(views: list[np.ndarray]) -> np.ndarray:
    """[N] x [T, H, W, 3] -> [N, T, H, W, 3], or an object array when shapes differ."""
    if len({v.shape for v in views}) == 1:
        return np.stack(views)
    out = np.empty(len(views), dtype=object)
    out[:] = views
    return out


def views_to_batch(views: list[dict[str, Any]], cfg: DataConfig) -> dict[str, np.ndarray]:
    """Output rows -> a columnar numpy batch with fixed dtypes."""
    if not views:
        raise ValueError("no views to batch")
    batch = {"frames": _stack_frames([v["frames"] for v in views]),
             "video_id": np.array([v["video_id"] for v in views], dtype=object)}
    for name, dtype in (("label", np.int64), ("clip_index", np.int64), ("crop_index", np.int64),
                        ("start_sec", np.float64), ("end_sec", np.float64),
                        ("num_padded", np.int64), ("epoch", np.int64)):
        batch[name] = np.array([v[name] for v in views], dtype=dtype)
    return batch


def _decode_batch(batch: pa.Table, *, cfg: DataConfig, mode: str, seed: int,
                  error_uri: str | None) -> Iterator[dict[str, np.ndarray]]:
    """map_batches UDF: a batch of manifest rows -> a batch of clip views (bad rows dropped).

    A generator, so a batch whose rows all failed yields nothing (an empty numpy batch would
    not convert to the tensor column type).
    """
    views: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for row in batch.to_pylist():
        got, err = process_row(row, cfg, mode=mode, seed=seed, epoch=row["epoch"])
        views.extend(got)
        if err is not None:
            errors.append(err)
            log.warning("skipping %s (%s): %s", err["uri"], err["stage"], err["error"])
    if errors and error_uri:
        write_errors(error_uri, errors)
    if views:
        yield views_to_batch(views, cfg)


def _items(rows: Sequence[dict[str, Any]], mode: str, seed: int, epoch: int,
           epochs: int) -> list[dict[str, Any]]:
    """Manifest rows -> the plain items fed to Ray (shuffled per epoch for train)."""
    base = [{"path": str(r["path"]), "label": int(r.get("label", -1)),
             "video_id": str(r.get("video_id") or r["path"]),
             "start_sec": None if r.get("start_sec") is None else float(r["start_sec"]),
             "end_sec": None if r.get("end_sec") is None else float(r["end_sec"])} for r in rows]
    items = []
    for e in range(epoch, epoch + epochs):
        order = np.arange(len(base))
        if mode == "train":
            order = np.random.default_rng([int(seed) & 0xFFFFFFFF, e, 0x5EED]).permutation(len(base))
        items.extend({**base[i], "epoch": e} for i in order)
    return items


def build_clip_dataset(rows: Sequence[dict[str, Any]], cfg: DataConfig, *, mode: Mode, seed: int,
                       error_uri: str | None = None, epoch: int = 0, epochs: int = 1,
                       materialize: bool = False) -> "ray.data.Dataset":
    """Manifest rows -> a Ray Dataset of uint8 clip views (see the module docstring for columns).

    mode: "train" (random clip / jitter / crop / flip, rows shuffled per epoch) or "val" / "test"
    (uniform or cover clips x 1 or 3 crops). seed + epoch fix every random choice; `epochs` > 1
    chains that many epochs (each reshuffled, with new clips) into one streaming dataset.
    error_uri: folder for error part files (see `collect_errors`). materialize: decode now and
    keep the result in the object store (validation sets iterated every epoch).
    """
    if mode not in ("train", "val", "test"):
        raise ValueError(f"mode must be train, val or test, got {mode!r}")
    if mode == "train" and cfg.crop_size is None:
        raise ValueError("train mode needs crop_size")
    if epochs <= 0:
        raise ValueError("epochs must be >= 1")
    items = _items(rows, mode, seed, epoch, epochs)
    if not items:
        raise ValueError("no rows to build a dataset from")
    blocks = max(1, min(math.ceil(len(items) / cfg.batch_size), 10_000))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    fn = functools.partial(_decode_batch, cfg=cfg, mode=mode, seed=seed, error_uri=error_uri)
    remote_args: dict[str, Any] = {"num_cpus": cfg.num_cpus}
    if cfg.memory:
        remote_args["memory"] = cfg.memory
    ds = ds.map_batches(fn, batch_size=cfg.batch_size, batch_format="pyarrow", **remote_args)
    return ds.materialize() if materialize else ds


def config_dict(cfg: DataConfig) -> dict[str, Any]:
    """A JSON-ready dict of a DataConfig (for summary files)."""
    return asdict(cfg)
