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
[i * R, (i + 1) * R)), processed one per Ray Data task; a shard writes one or more files, each
cut at about `--shard-mb` (names `shard-<shard>-<part>.parquet`), then its marker. Every write is
atomic and every name deterministic, so a re-run skips shards that have a marker and redoes the
others (a retried task rewrites the same files). A re-run with another config or manifest is
refused unless `--overwrite`. Bad videos never fail the job: they are counted and listed in
errors.parquet; the job exits 0 and prints the counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.cli import parse_job
from pipeline.config import ConfigError
from pipeline.data.errors import error_text, errors_table
from pipeline.data.rows import DataConfig, process_row, views_to_batch
from pipeline.data.manifest import load_manifest, write_labels
from pipeline.guard import OutputConflict, claim_output

log = logging.getLogger("jobs.preprocess")

MB = 1024 * 1024
COVER_CLIPS_GUESS = 8  # clips per video assumed when sizing shards in --cover mode


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
    rows_per_shard: int | None = None  # manifest rows per shard (None: estimated from shard_mb)
    decode_threads: int = 1  # PyAV decoder threads per video
    num_cpus: float = 1.0  # CPUs per shard task
    memory_mb: int = 1024  # memory reserved per shard task
    seed: int = 0
    overwrite: bool = False  # discard earlier output in --output


EXAMPLES = """examples:
  python -m jobs.preprocess --manifest s3://b/train.csv --output s3://b/clips-8x32 \\
      --num-frames 8 --sampling-rate 32 --clips 2 --short-side 224 --crop-size 224
  python -m jobs.preprocess --manifest howto.csv --howto100m-template 's3://b/v/{video_id}.mp4' \\
      --output s3://b/howto-cover --sampling cover --short-side 224"""


def data_config(cfg: PreprocessConfig) -> DataConfig:
    """The DataConfig for val/test-style deterministic clips of the job."""
    crop = cfg.short_side if cfg.crop_size is None else (cfg.crop_size or None)
    return DataConfig(
        num_frames=cfg.num_frames, sampling_rate=cfg.sampling_rate, crop_size=crop,
        train_short_side=(cfg.short_side, cfg.short_side), short_side=cfg.short_side,
        clips=cfg.clips, crops=cfg.crops, sampling=cfg.sampling, decode_threads=cfg.decode_threads,
        num_cpus=cfg.num_cpus, memory=cfg.memory_mb * MB, batch_size=1)


def validate(cfg: PreprocessConfig) -> DataConfig:
    """Checks the schema cannot express; returns the job's DataConfig (raises ConfigError)."""
    if cfg.rows_per_shard is not None and cfg.rows_per_shard < 1:
        raise ConfigError(f"--rows-per-shard: must be >= 1, got {cfg.rows_per_shard}")
    if not cfg.shard_mb > 0:
        raise ConfigError(f"--shard-mb: must be > 0, got {cfg.shard_mb}")
    try:
        return data_config(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def estimate_row_bytes(cfg: DataConfig) -> int:
    """Rough bytes of one manifest row's output (clips x crops x frames)."""
    side = cfg.crop_size or cfg.eval_short_side()
    other = cfg.crop_size or round(side * 16 / 9)
    clips = COVER_CLIPS_GUESS if cfg.sampling == "cover" else cfg.clips
    return clips * cfg.crops * cfg.num_frames * side * other * 3


def plan_shards(num_rows: int, rows_per_shard: int) -> list[tuple[int, int, int]]:
    """(shard index, first row, end row) covering rows [0, num_rows)."""
    return [(i, lo, min(lo + rows_per_shard, num_rows))
            for i, lo in enumerate(range(0, num_rows, rows_per_shard))]


def manifest_fingerprint(rows: list[dict[str, Any]]) -> str:
    """Hash of the rows that decide shard contents (order, paths, labels, segments)."""
    h = hashlib.sha1()
    for r in rows:
        h.update(f"{r['path']}|{r['label']}|{r['video_id']}|{r['start_sec']}|{r['end_sec']}\n".encode())
    return h.hexdigest()


def shard_name(index: int, part: int | None = None) -> str:
    """`shard-00012` or, for a data file, `shard-00012-003.parquet`."""
    return f"shard-{index:05d}" if part is None else f"shard-{index:05d}-{part:03d}.parquet"


def _clip_table(views: list[dict[str, Any]], paths: list[str], cfg: DataConfig) -> pa.Table:
    """Views -> an Arrow table whose frames column is Ray's tensor extension type."""
    from ray.data.extensions import ArrowTensorArray

    batch = views_to_batch(views)
    cols: dict[str, Any] = {"frames": ArrowTensorArray.from_numpy(batch.pop("frames"))}
    cols.update({k: pa.array(v.tolist() if v.dtype == object else v) for k, v in batch.items()
                 if k != "epoch"})
    cols["path"] = pa.array(paths, pa.string())
    return pa.table(cols)


def process_shard(spec: dict[str, Any], cfg: DataConfig, seed: int, shard_bytes: int) -> dict[str, Any]:
    """Decode one shard's rows, write its Parquet file(s) and then its marker; return the marker."""
    clips_dir, progress = spec["clips_dir"], spec["progress_dir"]
    files: list[str] = []
    errors: list[dict[str, str]] = []
    buf: list[dict[str, Any]] = []
    buf_paths: list[str] = []
    buf_bytes = ok = clips = 0

    def flush() -> None:
        nonlocal buf, buf_paths, buf_bytes
        if buf:
            name = shard_name(spec["index"], len(files))
            storage.write_parquet_atomic(storage.join(clips_dir, name), _clip_table(buf, buf_paths, cfg))
            files.append(name)
        buf, buf_paths, buf_bytes = [], [], 0

    for row in spec["rows"]:
        views, err = process_row(row, cfg, mode="test", seed=seed)
        if err is not None:
            errors.append(err)
            continue
        ok += 1
        clips += len(views)
        for v in views:
            if buf and buf_bytes + v["frames"].nbytes > shard_bytes:
                flush()
            buf.append(v)
            buf_paths.append(row["path"])
            buf_bytes += v["frames"].nbytes
    flush()
    marker = {"shard": spec["index"], "rows": [spec["lo"], spec["hi"]], "files": files,
              "videos_ok": ok, "videos_failed": len(errors), "clips": clips, "errors": errors}
    storage.write_json(storage.join(progress, shard_name(spec["index"]) + ".json"), marker)
    return marker


def _shard_udf(batch: dict[str, np.ndarray], *, cfg: DataConfig, seed: int,
               shard_bytes: int) -> dict[str, np.ndarray]:
    """Ray Data UDF: one shard spec per row -> one small stats row per shard."""
    out: dict[str, list] = {"shard": [], "videos_ok": [], "videos_failed": [], "clips": [], "files": []}
    for text in batch["spec"]:
        m = process_shard(json.loads(text), cfg, seed, shard_bytes)
        for k in ("shard", "videos_ok", "videos_failed", "clips"):
            out[k].append(m[k])
        out["files"].append(len(m["files"]))
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


def read_job_manifest(job: PreprocessConfig) -> Any:
    """The job's manifest; ConfigError (one line) when it is missing, unreadable or has no usable row."""
    try:
        manifest = load_manifest(job.manifest, labels=job.labels or None,
                                 howto100m_template=job.howto100m_template or None)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"--manifest {job.manifest}: {error_text(e)}") from None
    if not manifest.rows:
        first = f"; first: {manifest.errors[0]['error']}" if manifest.errors else ""
        raise ConfigError(f"--manifest {job.manifest}: no usable rows ({len(manifest.errors)} bad{first})")
    return manifest


def _check_config(job_config: dict[str, Any], overwrite: bool, output: str) -> None:
    """Refuse to mix output of another config/manifest, or of another job, into a folder (unless overwrite)."""
    claim_output(output, "_progress/config.json", job_config, overwrite=overwrite, job="jobs.preprocess",
                 owned=("clips", "_progress", "errors.parquet", "summary.json"))


def run(job: PreprocessConfig) -> dict[str, Any]:
    """Run the job; returns the summary dict (also written to summary.json)."""
    import ray

    from pipeline.data.dataset import progress_bars_on_terminal

    t0 = time.time()
    cfg = validate(job)
    manifest = read_job_manifest(job)
    out = job.output.rstrip("/")
    clips_dir, progress_dir = storage.join(out, "clips"), storage.join(out, "_progress")
    row_bytes = max(1, estimate_row_bytes(cfg))
    shard_bytes = max(1, int(job.shard_mb * MB))
    rows_per_shard = job.rows_per_shard or max(1, min(1000, shard_bytes // row_bytes))
    job_config = _jsonable({"manifest": job.manifest, "data": asdict(cfg), "seed": job.seed,
                  "rows_per_shard": rows_per_shard, "shard_mb": job.shard_mb,
                  "labels": list(manifest.labels.names),
                  "manifest_rows": len(manifest.rows), "manifest_sha1": manifest_fingerprint(manifest.rows)})
    _check_config(job_config, job.overwrite, out)
    write_labels(storage.join(out, "labels.json"), manifest.labels)

    shards = plan_shards(len(manifest.rows), rows_per_shard)
    done = {int(os.path.basename(u)[6:11]) for u in storage.list_files(progress_dir, (".json",))
            if os.path.basename(u).startswith("shard-")}
    pending = [s for s in shards if s[0] not in done]
    print(f"[preprocess] {len(manifest.rows)} videos ({len(manifest.errors)} bad manifest rows) in "
          f"{len(shards)} shards of {rows_per_shard} rows; {len(shards) - len(pending)} already "
          f"complete, {len(pending)} to do", flush=True)
    if pending:
        if not ray.is_initialized():
            ray.init()
        progress_bars_on_terminal()
        specs = [json.dumps({"index": i, "lo": lo, "hi": hi, "rows": [_core(r) for r in manifest.rows[lo:hi]],
                             "clips_dir": clips_dir, "progress_dir": progress_dir}) for i, lo, hi in pending]
        ds = ray.data.from_items([{"spec": s} for s in specs], override_num_blocks=len(specs))
        ds = ds.map_batches(_shard_udf, batch_size=1, num_cpus=cfg.num_cpus, memory=cfg.memory,
                            fn_kwargs={"cfg": cfg, "seed": job.seed, "shard_bytes": shard_bytes})
        for n, r in enumerate(ds.iter_rows(), start=1):
            print(f"[preprocess] shard {r['shard']:05d} done ({n}/{len(pending)}): {r['videos_ok']} ok, "
                  f"{r['videos_failed']} failed, {r['clips']} clips in {r['files']} file(s)", flush=True)
    return _summarise(out, progress_dir, manifest, shards, job_config, time.time() - t0)


def _jsonable(obj: Any) -> Any:
    """What the object reads back as from JSON (tuples -> lists), for config comparison."""
    return json.loads(json.dumps(obj))


def _core(row: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields a shard task needs."""
    return {k: row.get(k) for k in ("path", "label", "video_id", "start_sec", "end_sec")}


def _summarise(out: str, progress_dir: str, manifest, shards, job_config, seconds: float) -> dict[str, Any]:
    """Merge shard markers into summary.json and errors.parquet."""
    markers = [storage.read_json(storage.join(progress_dir, shard_name(i) + ".json")) for i, _, _ in shards]
    errors = list(manifest.errors) + [e for m in markers for e in m["errors"]]
    err_uri = storage.join(out, "errors.parquet")
    if errors:
        storage.write_parquet_atomic(err_uri, errors_table(errors))
    else:
        storage.remove(err_uri)
    summary = {
        "videos": len(manifest.rows) + len(manifest.errors),
        "videos_ok": sum(m["videos_ok"] for m in markers),
        "videos_failed": sum(m["videos_failed"] for m in markers) + len(manifest.errors),
        "manifest_errors": len(manifest.errors),
        "clips": sum(m["clips"] for m in markers),
        "shards": len(markers),
        "files": [storage.join("clips", f) for m in markers for f in m["files"]],
        "errors": len(errors),
        "seconds": round(seconds, 3),
        "config": job_config,
    }
    storage.write_json(storage.join(out, "summary.json"), summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 even when some videos failed, 2 for bad arguments)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        job, _ = parse_job(PreprocessConfig, argv, prog="python -m jobs.preprocess", doc=__doc__, examples=EXAMPLES,
                           required=("manifest", "output"))
        validate(job)
        summary = run(job)
    except (ConfigError, OutputConflict) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(f"[preprocess] {summary['videos_ok']}/{summary['videos']} videos ok, "
          f"{summary['videos_failed']} failed, {summary['clips']} clips in {len(summary['files'])} "
          f"file(s) -> {job.output}" + (f"; errors: {storage.join(job.output, 'errors.parquet')}"
                                        if summary["errors"] else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
