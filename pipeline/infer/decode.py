"""One video's clips for inference, a few at a time, as columnar clip rows (no Ray).

    for batch in decode_video({"video_id": "v", "uri": "s3://b/v.mp4"}, ClipConfig(sampling="cover")):
        batch["frames"]      # uint8 [k, V, T, S, S, 3]: k clips of this seek pass, V crops
        batch["clip_index"]  # int64 [k]: the clips' places in the video (0..num_clips-1)

The clips come from the one clip path every stage uses (`pipeline.data.clips.iter_clips`, test
mode), `spec.clips_per_decode` clips per batch, so a two-hour video's clips stream out while the
rest decode and the reader never holds more than one seek pass. Every row carries what the
video's output row needs (`num_clips`, clip span, duration, fps, padding, truncation), so the
scores can be aggregated wherever all of a video's clips come together.

A failure never raises: the video gives one row with `error` and `stage` (`pipeline.data.errors`'
vocabulary; `num_clips` 0). A transient storage failure (5xx, throttling, resets, timeouts) is
retried with backoff, and waits out an outage of the whole store with the job's other readers; a
retry resumes after the clips already delivered, so no clip is given twice and none is lost; when
storage stays down the row's stage is the retryable `storage`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import numpy as np

from pipeline import storage
from pipeline.data.clips import ClipConfig, clip_spans, iter_clips
from pipeline.data.decode import DecodeError, Video
from pipeline.data.errors import classify, error_text

ROW_COLUMNS = ("video_id", "clip_index", "num_clips", "frames", "start_sec", "end_sec", "num_padded",
               "duration", "fps", "video_frames", "truncated", "error", "stage", "decode_s")


def error_batch(video_id: str, stage: str, error: str, spec: ClipConfig) -> dict[str, np.ndarray]:
    """The one clip row of a video that failed: `num_clips` 0, `error`, `stage`, and a one-frame
    placeholder of a clip's shape in `frames` (the model never sees it)."""
    views, side = (spec.crops, spec.crop_size) if spec.crop_size else (1, 1)
    return _batch(video_id, np.zeros((1, views, spec.num_frames, side, side, 3), np.uint8), [0], 0, [0.0], [0.0], [0],
                  {"duration": 0.0, "fps": 0.0, "video_frames": 0, "truncated": False}, error=error_text(error), stage=stage)


def decode_videos(batch: Any, spec: ClipConfig, gate: Any = None,
                  block_bytes: int = 16 * 2**20) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data UDF (`map_batches` over the video list, pyarrow batches): the clip rows of the
    videos of one input batch, seek passes joined into blocks of at most `block_bytes` of frames;
    `gate`, the job's storage-outage handle (`pipeline.outage`), shared by every reader. It lives
    here, not beside the dataset, so that a decode worker imports no torch and no Ray Data."""
    import cv2

    from pipeline import outage

    cv2.setNumThreads(1)
    outage.install(gate)
    for item in batch.to_pylist():
        yield from merged(decode_video(item, spec), block_bytes)


def decode_video(item: dict[str, Any], spec: ClipConfig, *,
                 sleep: Callable[[float], None] = time.sleep) -> Iterator[dict[str, np.ndarray]]:
    """Clip rows of one input video (`video_id`, `uri`, optional `start_sec` / `end_sec`), one
    batch per seek pass; a failure is one error batch (see the module docstring).

    Storage reads follow `storage.with_retries`' rules, resumable: a transient failure is tried
    again (`spec.storage_attempts` tries, `spec.storage_backoff_s` apart, doubling) from the first
    clip not yet delivered, and while the process's read gate (the job's shared outage monitor,
    `pipeline.outage`) says the whole store is down the reader waits on it without spending tries.
    """
    vid, uri = str(item["video_id"]), str(item["uri"])
    gate = storage.read_gate()
    delivered, tries, t0 = 0, 0, time.perf_counter()
    while True:
        error: BaseException | None = None
        if not gate.wait(uri):
            error = storage.StorageOutage(storage.OUTAGE_TEXT)
        else:
            try:
                for batch in _read(item, spec, skip=delivered):
                    if not delivered:
                        gate.answered(uri)
                    delivered += len(batch["clip_index"])
                    tries = 0
                    batch["decode_s"][0] = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    yield batch
                return
            except Exception as e:  # noqa: BLE001 - one bad video never fails the job
                error = e
        if storage.is_transient(error) and not isinstance(error, storage.StorageOutage):
            verdict = gate.failed(uri, error)
            if verdict == storage.WAIT:
                continue  # the shared backoff decides when to try again
            if verdict == storage.GIVE_UP:
                error = storage.StorageOutage(storage.OUTAGE_TEXT)
            else:
                tries += 1
                if tries < spec.storage_attempts:
                    sleep(spec.storage_backoff_s * 2 ** (tries - 1))
                    continue
        elif not storage.is_transient(error):
            gate.answered(uri)  # the store answered: the failure is the file's
        stage, message = classify(error, attempts=spec.storage_attempts)
        yield error_batch(vid, stage, message, spec)
        return


def _read(item: dict[str, Any], spec: ClipConfig, *, skip: int) -> Iterator[dict[str, np.ndarray]]:
    """Open the video and yield its clip batches after the first `skip` clips."""
    row = {"path": str(item["uri"]), "video_id": item["video_id"], "start_sec": item.get("start_sec"),
           "end_sec": item.get("end_sec")}
    with _open_source(row["path"]) as src, Video(src, threads=1, max_pixels=spec.max_pixels) as video:
        num_clips = len(clip_spans(video, row, spec, mode="test")[2])
        info = {"duration": float(video.info.duration), "fps": float(video.info.fps),
                "video_frames": int(video.info.num_frames), "truncated": bool(video.info.truncated)}
        index = skip
        for clips in iter_clips(video, row, spec, mode="test", skip=skip):
            k = len(clips.starts)
            info["truncated"] = bool(video.info.truncated)  # found while decoding
            yield _batch(str(item["video_id"]), clips.frames, list(range(index, index + k)), num_clips,
                         clips.starts, clips.ends, clips.num_padded, info)
            index += k


@contextlib.contextmanager
def _open_source(uri: str) -> Iterator[Any]:
    """`storage.open_for_reading`, with a missing file as DecodeError('open')."""
    try:
        with storage.open_for_reading(uri) as src:
            yield src
    except FileNotFoundError as e:
        raise DecodeError("open", f"file not found: {uri}") from e


def _batch(video_id: str, frames: np.ndarray, clip_index: list[int], num_clips: int, starts: list[float],
           ends: list[float], padded: list[int], info: dict[str, Any], *, error: str = "",
           stage: str = "") -> dict[str, np.ndarray]:
    """Columnar clip rows (see `ROW_COLUMNS`); frames uint8 [k, V, T, S, S, 3]."""
    k = len(clip_index)
    return {
        "video_id": np.array([video_id] * k, dtype=object),
        "clip_index": np.asarray(clip_index, np.int64),
        "num_clips": np.full(k, num_clips, np.int64),
        "frames": frames,
        "start_sec": np.asarray(starts, np.float64),
        "end_sec": np.asarray(ends, np.float64),
        "num_padded": np.asarray(padded, np.int64),
        "duration": np.full(k, info["duration"], np.float64),
        "fps": np.full(k, info["fps"], np.float64),
        "video_frames": np.full(k, info["video_frames"], np.int64),
        "truncated": np.full(k, info["truncated"], np.bool_),
        "error": np.array([error] * k, dtype=object),
        "stage": np.array([stage] * k, dtype=object),
        "decode_s": np.zeros(k, np.float64),
    }


def read_video(item: dict[str, Any], spec: ClipConfig) -> tuple[dict[str, Any], np.ndarray]:
    """All of one video's clips at once -> (meta, uint8 `[K, V, T, S, S, 3]`), for callers that
    need the whole video in memory (explanations, tests); `decode_video` is the streaming form.

    meta: `duration, fps, num_frames, starts, ends` (seconds per clip), `num_padded`, `truncated`.
    Raises DecodeError (with the failed stage) where `decode_video` gives an error row.
    """
    batches = list(decode_video({"video_id": item.get("video_id", ""), **item}, spec))
    if batches[0]["error"][0]:
        raise DecodeError(str(batches[0]["stage"][0]), str(batches[0]["error"][0]))
    frames = np.concatenate([b["frames"] for b in batches])  # [K, V, T, S, S, 3]
    first, last = batches[0], batches[-1]
    return {
        "duration": float(first["duration"][0]), "fps": float(first["fps"][0]),
        "num_frames": int(first["video_frames"][0]),
        "starts": [float(t) for b in batches for t in b["start_sec"]],
        "ends": [float(t) for b in batches for t in b["end_sec"]],
        "num_padded": int(sum(int(b["num_padded"].sum()) for b in batches)),
        "truncated": bool(last["truncated"][0]),
    }, frames


def merged(batches: Iterator[dict[str, np.ndarray]], max_bytes: int) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive clip batches of one video joined while their frames stay within `max_bytes`
    (one Ray Data block each: fewer, fuller blocks for small clips; a large seek pass stays alone)."""
    held: list[dict[str, np.ndarray]] = []
    size = 0
    for batch in batches:
        if held and size + batch["frames"].nbytes > max_bytes:
            yield _join(held)
            held, size = [], 0
        held.append(batch)
        size += batch["frames"].nbytes
    if held:
        yield _join(held)


def _join(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return batches[0] if len(batches) == 1 else {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
