"""Re-encode a manifest's videos once into the training format: short side, short fixed GOP, no audio, fast-start mp4.

Output layout (local or object storage):

    <output>/videos/<safe video id>.mp4      one copy per distinct source path (segments share it)
    <output>/manifest.csv                    the manifest's rows and columns, `path` replaced by the
                                             copy's path RELATIVE to the manifest (`videos/x.mp4`:
                                             resolved against the manifest's folder, so the folder
                                             can move or be synced between disk and s3://), labels
                                             as names; rows of failed videos left out
    <output>/labels.json                     the label ids (read beside manifest.csv by every job)
    <output>/_progress/config.json           the job's config + manifest fingerprint
    <output>/_progress/shard-00000.json      completion marker (per video: ok / error, bytes, frames)
    <output>/summary.json  errors.parquet (uri, stage, error; only when any failed)

Then train on it: `python -m jobs.train --set train_manifest=<output>/manifest.csv ...`.
Frame i of a copy is frame i of its source at the same time (pipeline/data/transcode.py,
docs/DATA.md), so segments (`start_sec`, `end_sec`) and clip times keep their meaning.

Shards are fixed groups of `videos_per_shard` distinct videos in manifest order, one Ray task
each; a video's copy is written atomically under its final name, then the shard's marker. A re-run
skips shards with a marker and, inside a shard it redoes, videos whose copy exists. A video that
failed only because storage was unavailable (5xx, throttling, resets; retried `storage_attempts`
times) is recorded as retryable (stage `storage`) and tried again by the next run; while storage
is down for every video, readers wait for it instead, up to `--storage-outage-s` (`pipeline.outage`).
Bad videos never fail the job: they are listed in errors.parquet; the job exits 0 and prints the
counts and the errors by kind. summary.json describes the whole folder, with this run's share
under `this_run`. The skeleton shared with `jobs.preprocess` is `jobs.shardjob`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import posixpath
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import pyarrow as pa

from jobs.shardjob import (ShardJob, check_flags, job_main, print_error_kinds, read_job_manifest, retry_note,
                           run_shard_job, this_run_totals)
from jobs.shards import jsonable, load_markers, manifest_fingerprint, write_error_table
from pipeline import storage
from pipeline.config import ConfigError
from pipeline.data.errors import ENCODE, read_or_error
from pipeline.data.manifest import write_labels
from pipeline.data.transcode import Encoding, encoder_available, transcode

MB = 1024 * 1024


@dataclass
class TranscodeConfig(Encoding):
    """Everything `jobs.transcode` takes: the encoding (`pipeline.data.transcode.Encoding`) and the job."""

    manifest: str = ""  # CSV / JSONL / Parquet manifest, class folder, or HowTo100M CSV (required)
    output: str = ""  # output folder URI: local, file://, s3://, gs:// (required)
    labels: str = ""  # labels.json that fixes label ids (default: derived from the manifest)
    howto100m_template: str = ""  # read --manifest as a HowTo100M task CSV, paths like s3://b/v/{video_id}.mp4
    videos_per_shard: int = 16  # distinct videos per shard: the unit of work and of resume
    num_cpus: float = 1.0  # CPUs per shard task (decode + encode run on one thread each)
    memory_mb: int = 1024  # memory reserved per shard task
    read_block_size_mb: float = 8.0  # bytes per ranged read of a remote source
    storage_attempts: int = 3  # tries per video while storage fails transiently (5xx, throttling, resets)
    storage_backoff_s: float = 2.0  # wait before the second try (doubling after)
    storage_outage_s: float = 300.0  # while reads of several videos fail transiently, every reader waits up to this long for storage to answer
    ray_timeout_s: float = 60.0  # give up (exit 2) when the Ray to join does not answer within this
    overwrite: bool = False  # discard earlier output in --output

    def encoding(self) -> Encoding:
        return Encoding(**{k: getattr(self, k) for k in Encoding.__dataclass_fields__})


EXAMPLES = """examples:
  python -m jobs.transcode --manifest s3://b/train.csv --output s3://b/train-256-g16
  python -m jobs.transcode --manifest howto.csv --howto100m-template 's3://b/v/{video_id}.mp4' \\
      --output s3://b/howto-256-g16 --short-side 256 --gop 16 --bframes 7 --crf 22 --no-fastdecode
  python -m jobs.train --set train_manifest=s3://b/howto-256-g16/manifest.csv ..."""


def validate(job: TranscodeConfig) -> Encoding:
    """Checks the schema cannot express; returns the encoding (raises ConfigError)."""
    check_flags(("videos-per-shard", job.videos_per_shard), job.storage_attempts, job.storage_outage_s)
    try:
        enc = job.encoding()
    except ValueError as e:
        raise ConfigError(f"--{str(e).split()[0].replace('_', '-')}: {e}") from None
    if not encoder_available(enc.codec):
        raise ConfigError(f"--codec {enc.codec}: no such encoder in this PyAV/FFmpeg build "
                          f"(available H.264: {[c for c in ('libx264', 'libopenh264', 'h264') if encoder_available(c)]})")
    return enc


def plan_videos(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(source path, copy name) per distinct path in manifest order. The name is the row's video
    id made safe (`storage.safe_relpath`), or the file's stem when several rows (segments) share
    the path; a name taken by an earlier path gets the path's hash."""
    ids: dict[str, list[str]] = {}
    for r in rows:
        ids.setdefault(str(r["path"]), []).append(str(r["video_id"]))
    out, taken = [], set()
    for path, vids in ids.items():
        base = vids[0] if len(vids) == 1 else posixpath.splitext(posixpath.basename(path))[0]
        name = storage.safe_relpath(base, ".mp4")
        if name in taken:  # another path made the same name: this one gets its path's hash
            name = storage.safe_relpath(f"{base}-{hashlib.sha1(path.encode()).hexdigest()[:8]}", ".mp4")
        taken.add(name)
        out.append((path, name))
    return out


def _copy_one(src: str, dst: str, enc: Encoding, block_size: int) -> dict[str, Any]:
    """Transcode `src` into the object `dst`, atomically (a local temporary file first)."""
    local = storage.is_local(dst)
    folder = os.path.dirname(storage.local_path(dst)) if local else None
    if folder:
        os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".transcode-") as tmp:
        path = os.path.join(tmp, "copy.mp4")
        t0 = time.process_time()
        with storage.open_for_reading(src, block_size=block_size) as f:
            info = transcode(f, path, enc)
        cpu = time.process_time() - t0
        if local:
            os.replace(path, storage.local_path(dst))
        else:
            with open(path, "rb") as f, storage.open_atomic(dst) as out:
                while chunk := f.read(8 * MB):
                    out.write(chunk)
    fs, spath = storage.filesystem(src)
    return {**info.to_dict(), "source_bytes": int(fs.size(spath)), "cpu_s": round(cpu, 3)}


def transcode_video(src: str, dst: str, enc: Encoding, *, attempts: int, backoff_s: float,
                    block_size: int) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """One video -> (stats, None) or (None, error row); never raises. Transient storage failures
    are retried, and reported with the retryable stage when they persist (`read_or_error`)."""
    return read_or_error(src, lambda: _copy_one(src, dst, enc, block_size), attempts=attempts,
                         backoff_s=backoff_s, default=ENCODE)


def process_shard(spec: dict[str, Any], context: tuple[TranscodeConfig, Encoding]) -> dict[str, Any]:
    """Transcode one shard's videos (skipping those whose copy exists); returns its marker."""
    job, enc = context
    videos_dir = storage.join(spec["output"], "videos")
    videos, errors = [], []
    for item in spec["items"]:
        src, name = item["path"], item["name"]
        dst = storage.join_inside(videos_dir, name)
        if storage.exists(dst):  # done by an earlier, interrupted attempt
            videos.append({"path": src, "name": name, "ok": True, "resumed": True})
            continue
        stats, err = transcode_video(src, dst, enc, attempts=job.storage_attempts, backoff_s=job.storage_backoff_s,
                                     block_size=int(job.read_block_size_mb * MB))
        videos.append({"path": src, "name": name, "ok": err is None, **(stats or {})})
        if err is not None:
            errors.append(err)
    return {"videos": videos, "errors": errors}


def _shard_stats(m: dict[str, Any]) -> dict[str, int]:
    return {"videos_ok": sum(v["ok"] for v in m["videos"]), "videos_failed": len(m["errors"])}


def _shard_line(r: dict[str, Any]) -> str:
    return f"{r['videos_ok']} ok, {r['videos_failed']} failed"


def run(job: TranscodeConfig) -> dict[str, Any]:
    """Run the job; returns the summary dict (also written to summary.json)."""
    enc = validate(job)
    manifest = read_job_manifest(job)
    out = job.output.rstrip("/")
    videos = plan_videos(manifest.rows)
    job_config = jsonable({"manifest": job.manifest, "encoding": asdict(enc), "videos_per_shard": job.videos_per_shard,
                            "labels": list(manifest.labels.names), "manifest_rows": len(manifest.rows),
                            "manifest_sha1": manifest_fingerprint(manifest.rows)})
    run_ = run_shard_job(ShardJob(
        name="transcode", output=out, config=job_config, overwrite=job.overwrite,
        owned=("videos", "_progress", "manifest.csv", "labels.json", "errors.parquet", "summary.json"),
        items=pa.table({"path": [p for p, _ in videos], "name": [n for _, n in videos]}),
        per_shard=job.videos_per_shard, work=process_shard, context=(job, enc), stats=_shard_stats,
        line=_shard_line, ray_timeout_s=job.ray_timeout_s, num_cpus=job.num_cpus, memory=job.memory_mb * MB,
        storage_outage_s=job.storage_outage_s, storage_backoff_s=job.storage_backoff_s,
        header=f"{len(videos)} videos ({len(manifest.rows)} rows, {len(manifest.errors)} bad manifest rows)"))
    return summarise(out, run_, manifest, job_config)


def manifest_csv(rows: Sequence[dict[str, Any]], copies: dict[str, str]) -> str:
    """The output manifest: each row whose video has a copy, `path` -> the copy's relative path."""
    labelled = any(r.get("label_name") is not None for r in rows)
    extra = sorted({k for r in rows for k in r} - {"path", "label", "label_name", "video_id", "start_sec", "end_sec"})
    cols = ["path", *(["label"] if labelled else []), "video_id", "start_sec", "end_sec", *extra]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        if r["path"] not in copies:
            continue
        rec = {**r, "path": f"videos/{copies[r['path']]}", "label": r.get("label_name")}
        w.writerow(["" if rec.get(c) is None else (repr(rec[c]) if isinstance(rec[c], float) else rec[c]) for c in cols])
    return buf.getvalue()


def summarise(out: str, run_, manifest, job_config) -> dict[str, Any]:
    """Merge every shard's marker (this run's and earlier runs') into manifest.csv, labels.json,
    errors.parquet and summary.json, which describes the whole folder, with this run's share
    under `this_run`."""
    markers = load_markers(run_.progress_dir, [i for i, _, _ in run_.shards], skip_missing=True)
    videos = [v for m in markers for v in m["videos"]]
    copies = {v["path"]: v["name"] for v in videos if v["ok"]}
    storage.write_bytes_atomic(storage.join(out, "manifest.csv"), manifest_csv(manifest.rows, copies).encode())
    write_labels(storage.join(out, "labels.json"), manifest.labels)
    errors = list(manifest.errors) + [e for m in markers for e in m["errors"]]
    write_error_table(out, errors)
    measured = [v for v in videos if v["ok"] and "bytes" in v]  # a copy resumed inside a redone shard has no stats
    src_bytes, out_bytes = sum(v["source_bytes"] for v in measured), sum(v["bytes"] for v in measured)
    summary = {
        "videos": run_.shards[-1][2] if run_.shards else 0, "videos_ok": len(copies),
        "videos_failed": sum(not v["ok"] for v in videos), "retryable": sum(m.get("retryable", 0) for m in markers),
        "manifest_rows": sum(r["path"] in copies for r in manifest.rows), "manifest_errors": len(manifest.errors),
        "errors": len(errors), "bytes_ratio": round(out_bytes / src_bytes, 4) if src_bytes else None,
        "this_run": this_run_totals(run_, ("videos_ok", "videos_failed", "retryable")), "config": job_config,
    }
    storage.write_json(storage.join(out, "summary.json"), summary)
    print_error_kinds("transcode", errors)
    return summary


def _result(job: TranscodeConfig, summary: dict[str, Any]) -> str:
    ratio = f", {summary['bytes_ratio']:.2f}x the source bytes" if summary["bytes_ratio"] else ""
    return (f"[transcode] {summary['videos_ok']}/{summary['videos']} videos ok, {summary['videos_failed']} failed"
            + retry_note(summary) + ratio
            + f" -> {storage.join(job.output, 'manifest.csv')} ({summary['manifest_rows']} rows)"
            + (f"; errors: {storage.join(job.output, 'errors.parquet')}" if summary["errors"] else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 even when some videos failed, 2 for bad arguments)."""
    return job_main(TranscodeConfig, argv, prog="python -m jobs.transcode", doc=__doc__, examples=EXAMPLES,
                    validate=validate, run=run, result=_result)


if __name__ == "__main__":
    sys.exit(main())
