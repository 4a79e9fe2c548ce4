"""Decode a manifest's videos into sharded Parquet clip files on local or object storage.

Output layout:

    <output>/clips/shard-00000-000.parquet   frames uint8 [T, H, W, 3] (Ray tensor extension),
                                             label, video_id, clip_index, crop_index, start_sec,
                                             end_sec, num_padded, path; read with
                                             `ray.data.read_parquet(<output>/clips)`
    <output>/_progress/config.json           the job's config + manifest fingerprint
    <output>/_progress/shard-00000.json      completion marker (rows, files, counts, errors)
    <output>/labels.json  summary.json  errors.parquet (uri, stage, error; only when any failed)

Shards are fixed groups of `rows_per_shard` consecutive manifest rows (shard i = rows
[i * R, (i + 1) * R)), processed one per Ray task (`jobs.shards.run_shards`, a bounded number in flight); a shard writes one or more files, each
cut at about `--shard-mb` (names `shard-<shard>-<part>.parquet`), then its marker. Every write is
atomic and every name deterministic, so a re-run skips shards that have a marker and redoes the
others (a retried task rewrites the same files). A re-run with another config or manifest is
refused unless `--overwrite`. Bad videos never fail the job: they are counted and listed in
errors.parquet; the job exits 0 and prints the counts and the errors by kind (one example each).
summary.json describes the whole folder (every shard, this run's and earlier runs'), with this
run's share under `this_run`. While storage is down (reads of several videos failing the same
way), every reader waits on one shared backoff and goes on by itself when storage answers, up
to `--storage-outage-s`; then the videos still open become retryable rows (`pipeline.outage`).
The skeleton shared with `jobs.transcode` is `jobs.shardjob`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import pyarrow as pa

from jobs.shardjob import (ShardJob, check_flags, job_main, print_error_kinds, read_job_manifest, retry_note,
                           run_shard_job, this_run_totals)
from jobs.shards import jsonable, load_markers, manifest_fingerprint, shard_name, write_error_table
from pipeline import storage
from pipeline.cli import flag_error
from pipeline.config import ConfigError
from pipeline.data.decode import MAX_PIXELS
from pipeline.data.rows import WORK_COLUMNS, DecodeConfig, manifest_table, process_row, views_to_batch
from pipeline.data.manifest import write_labels

log = logging.getLogger("jobs.preprocess")

MB = 1024 * 1024


@dataclass
class PreprocessConfig:
    """Everything `jobs.preprocess` takes; the clip fields use the clip recipe's names."""

    manifest: str = ""  # CSV / JSONL / Parquet manifest, class folder, or HowTo100M CSV (required)
    output: str = ""  # output folder URI: local, file://, s3://, gs:// (required)
    labels: str = ""  # labels.json that fixes label ids (default: derived from the manifest)
    howto100m_template: str = ""  # read --manifest as a HowTo100M task CSV, paths like s3://b/v/{video_id}.mp4
    num_frames: int = 8  # frames per clip
    sampling_rate: int = 32  # source frames between sampled frames at 30 fps
    sampling: Literal["uniform", "cover"] = "uniform"  # `clips` evenly spaced clips, or clips covering each video (HowTo100M)
    clips: int = 1  # clips per video with sampling=uniform
    short_side: int = 224  # short side of stored frames
    crop_size: int | None = None  # square crop side (None: short_side; 0 keeps whole frames)
    crops: int = 1  # views per clip: 1 centre crop, or 3 crops along the long side
    shard_mb: float = 256.0  # target size of one Parquet file
    rows_per_shard: int = 64  # manifest rows per shard: the unit of work and of resume (files are cut at shard_mb)
    decode_threads: int = 1  # PyAV decoder threads per video
    max_pixels: int | None = MAX_PIXELS  # width x height above which a video is an error row (admits 4K); None: no cap
    num_cpus: float = 1.0  # CPUs per shard task
    memory_mb: int = 1024  # memory reserved per shard task
    storage_attempts: int = 3  # tries per video while storage fails transiently (5xx, throttling, resets)
    storage_backoff_s: float = 2.0  # wait before the second try (doubling after)
    storage_outage_s: float = 300.0  # while reads of several videos fail transiently, every reader waits up to this long for storage to answer
    seed: int = 0
    ray_timeout_s: float = 60.0  # give up (exit 2) when the Ray to join does not answer within this
    overwrite: bool = False  # discard earlier output in --output


EXAMPLES = """examples:
  python -m jobs.preprocess --manifest s3://b/train.csv --output s3://b/clips-8x32 \\
      --num-frames 8 --sampling-rate 32 --clips 2 --short-side 224 --crop-size 224
  python -m jobs.preprocess --manifest howto.csv --howto100m-template 's3://b/v/{video_id}.mp4' \\
      --output s3://b/howto-cover --sampling cover --short-side 224"""


def data_config(cfg: PreprocessConfig) -> DecodeConfig:
    """The DecodeConfig for val/test-style deterministic clips of the job."""
    crop = cfg.short_side if cfg.crop_size is None else (cfg.crop_size or None)
    return DecodeConfig(
        num_frames=cfg.num_frames, sampling_rate=cfg.sampling_rate, crop_size=crop,
        train_short_side=(cfg.short_side, cfg.short_side), short_side=cfg.short_side,
        clips=cfg.clips, crops=cfg.crops, sampling=cfg.sampling, decode_threads=cfg.decode_threads,
        num_cpus=cfg.num_cpus, memory=cfg.memory_mb * MB, batch_size=1,
        storage_attempts=cfg.storage_attempts, storage_backoff_s=cfg.storage_backoff_s, max_pixels=cfg.max_pixels)


def validate(cfg: PreprocessConfig) -> DecodeConfig:
    """Checks the schema cannot express; returns the job's DecodeConfig (raises ConfigError)."""
    check_flags(("rows-per-shard", cfg.rows_per_shard), cfg.storage_attempts, cfg.storage_outage_s)
    if not cfg.shard_mb > 0:
        raise ConfigError(f"--shard-mb: must be > 0, got {cfg.shard_mb}")
    try:
        return data_config(cfg)
    except ValueError as e:
        raise flag_error(PreprocessConfig, e, {"train_short_side": "short_side"}) from e


def _clip_table(views: list[dict[str, Any]], paths: list[str]) -> pa.Table:
    """Views -> an Arrow table whose frames column is Ray's tensor extension type."""
    from ray.data.extensions import ArrowTensorArray

    batch = views_to_batch(views)
    cols: dict[str, Any] = {"frames": ArrowTensorArray.from_numpy(batch.pop("frames"))}
    cols.update({k: pa.array(v.tolist() if v.dtype == object else v) for k, v in batch.items()
                 if k != "epoch" and k not in WORK_COLUMNS})
    cols["path"] = pa.array(paths, pa.string())
    return pa.table(cols)


class _ShardWriter:
    """Buffers one shard's clip rows and writes them as Parquet files of about `shard_bytes`."""

    def __init__(self, index: int, clips_dir: str, shard_bytes: int):
        self.index, self.clips_dir, self.shard_bytes = index, clips_dir, shard_bytes
        self.files: list[str] = []
        self.views: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.bytes = 0

    def add(self, views: list[dict[str, Any]], path: str) -> None:
        for v in views:
            if self.views and self.bytes + v["frames"].nbytes > self.shard_bytes:
                self.flush()
            self.views.append(v)
            self.paths.append(path)
            self.bytes += v["frames"].nbytes

    def flush(self) -> None:
        if self.views:
            name = shard_name(self.index, len(self.files))
            storage.write_parquet_atomic(storage.join(self.clips_dir, name), _clip_table(self.views, self.paths))
            self.files.append(name)
        self.views, self.paths, self.bytes = [], [], 0


def _remove_shard_files(clips_dir: str, index: int) -> None:
    """Delete an earlier, incomplete attempt's files of this shard (a shard is rewritten whole)."""
    fs, path = storage.filesystem(clips_dir)
    for old in fs.glob(f"{path.rstrip('/')}/{shard_name(index)}-*.parquet"):
        fs.rm(old)


def process_shard(spec: dict[str, Any], context: tuple[DecodeConfig, int, int]) -> dict[str, Any]:
    """Decode one shard's rows and write its Parquet file(s); returns its marker (written by the
    skeleton: `shard-N.json`, or `shard-N.partial.json` when rows failed only because storage was
    unavailable, which a re-run redoes)."""
    cfg, seed, shard_bytes = context
    index, clips_dir = spec["index"], storage.join(spec["output"], "clips")
    _remove_shard_files(clips_dir, index)
    writer = _ShardWriter(index, clips_dir, shard_bytes)
    errors: list[dict[str, str]] = []
    ok = clips = 0
    for row in spec["items"]:
        views, err = process_row(row, cfg, mode="test", seed=seed)
        if err is not None:
            errors.append(err)
            continue
        ok += 1
        clips += len(views)
        writer.add(views, row["path"])
    writer.flush()
    return {"rows": [spec["lo"], spec["hi"]], "files": writer.files, "videos_ok": ok,
            "videos_failed": len(errors), "clips": clips, "errors": errors}


def _shard_stats(m: dict[str, Any]) -> dict[str, int]:
    return {"videos_ok": m["videos_ok"], "videos_failed": m["videos_failed"], "clips": m["clips"],
            "files": len(m["files"])}


def _shard_line(r: dict[str, Any]) -> str:
    return f"{r['videos_ok']} ok, {r['videos_failed']} failed, {r['clips']} clips in {r['files']} file(s)"


def run(job: PreprocessConfig) -> dict[str, Any]:
    """Run the job; returns the summary dict (also written to summary.json)."""
    cfg = validate(job)
    manifest = read_job_manifest(job)
    out = job.output.rstrip("/")
    job_config = jsonable({"manifest": job.manifest, "data": asdict(cfg), "seed": job.seed,
                           "rows_per_shard": job.rows_per_shard, "shard_mb": job.shard_mb,
                           "labels": list(manifest.labels.names), "manifest_rows": len(manifest.rows),
                           "manifest_sha1": manifest_fingerprint(manifest.rows)})
    shard_job = ShardJob(
        name="preprocess", output=out, config=job_config, overwrite=job.overwrite,
        owned=("clips", "_progress", "errors.parquet", "summary.json"),
        # the manifest goes to the object store once; each task reads its rows from it
        items=manifest_table(manifest.rows), per_shard=job.rows_per_shard, work=process_shard,
        context=(cfg, job.seed, max(1, int(job.shard_mb * MB))), stats=_shard_stats, line=_shard_line,
        ray_timeout_s=job.ray_timeout_s, num_cpus=cfg.num_cpus, memory=cfg.memory, storage_outage_s=job.storage_outage_s,
        storage_backoff_s=job.storage_backoff_s,
        header=f"{len(manifest.rows)} videos ({len(manifest.errors)} bad manifest rows)",
        before=lambda: write_labels(storage.join(out, "labels.json"), manifest.labels))
    run_ = run_shard_job(shard_job)
    return _summarise(out, run_, manifest, job_config)


def _summarise(out: str, run_, manifest, job_config) -> dict[str, Any]:
    """Merge every shard's marker (this run's and earlier runs') into summary.json, which
    describes the whole folder, with this run's share under `this_run`; and errors.parquet."""
    markers = load_markers(run_.progress_dir, [i for i, _, _ in run_.shards])
    errors = list(manifest.errors) + [e for m in markers for e in m["errors"]]
    write_error_table(out, errors)
    summary = {
        "videos": len(manifest.rows) + len(manifest.errors),
        "videos_ok": sum(m["videos_ok"] for m in markers),
        "videos_failed": sum(m["videos_failed"] for m in markers) + len(manifest.errors),
        "retryable": sum(m.get("retryable", 0) for m in markers),  # storage was down: run again
        "manifest_errors": len(manifest.errors),
        "clips": sum(m["clips"] for m in markers),
        "shards": len(markers),
        "files": [storage.join("clips", f) for m in markers for f in m["files"]],
        "errors": len(errors),
        "this_run": this_run_totals(run_, ("videos_ok", "videos_failed", "retryable", "clips", "files")),
        "config": job_config,
    }
    storage.write_json(storage.join(out, "summary.json"), summary)
    print_error_kinds("preprocess", errors)
    return summary


def _result(job: PreprocessConfig, summary: dict[str, Any]) -> str:
    return (f"[preprocess] {summary['videos_ok']}/{summary['videos']} videos ok, {summary['videos_failed']} failed"
            + retry_note(summary) + f", {summary['clips']} clips in {len(summary['files'])} file(s) -> {job.output}"
            + (f"; errors: {storage.join(job.output, 'errors.parquet')}" if summary["errors"] else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 even when some videos failed, 2 for bad arguments)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return job_main(PreprocessConfig, argv, prog="python -m jobs.preprocess", doc=__doc__, examples=EXAMPLES,
                    validate=validate, run=run, result=_result)


if __name__ == "__main__":
    sys.exit(main())
