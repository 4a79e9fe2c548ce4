"""The one skeleton of the jobs that write an output folder shard by shard (`jobs.preprocess`,
`jobs.transcode`): check the shared flags, claim the folder, plan the shards, run the pending
ones as Ray tasks that share one storage-outage monitor, print their progress, and sum up.

    def main(argv=None):  # parse, check before Ray (exit 2), run, print the result line
        return job_main(MyConfig, argv, prog=..., doc=__doc__, examples=..., validate=..., run=run, result=...)

    def run(job):
        run_ = run_shard_job(ShardJob(name="preprocess", output=out, config=job_config, ...))
        markers = load_markers(run_.progress_dir, [i for i, _, _ in run_.shards])  # the whole folder
        share = this_run_totals(run_, ("videos_ok", "videos_failed"))           # this run's share

A job supplies `work(spec, context) -> marker` (one shard: its items, its files, its `errors`);
the skeleton counts the retryable errors and writes the marker, complete or partial
(`jobs.shards.write_marker`), so a re-run redoes exactly the shards that met a storage outage.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from jobs.shards import plan_shards, read_markers, run_shards, write_marker
from pipeline import outage, storage
from pipeline.cli import parse_job
from pipeline.config import ConfigError
from pipeline.data.errors import error_kinds, error_text, is_retryable
from pipeline.data.manifest import Manifest, load_manifest
from pipeline.guard import OutputConflict, claim_output


def check_flags(per_shard: tuple[str, int], storage_attempts: int, storage_outage_s: float) -> None:
    """The checks every shard job makes on its shared flags (raises ConfigError naming the flag)."""
    flag, value = per_shard
    if value < 1:
        raise ConfigError(f"--{flag}: must be >= 1, got {value}")
    if storage_attempts < 1:
        raise ConfigError(f"--storage-attempts: must be >= 1, got {storage_attempts}")
    if not storage_outage_s > 0:  # also refuses nan
        raise ConfigError(f"--storage-outage-s: must be > 0, got {storage_outage_s}")


def read_job_manifest(job: Any) -> Manifest:
    """The manifest of a job (its `manifest`, `labels`, `howto100m_template`); ConfigError (one line) when it is missing, unreadable or has no usable row."""
    try:
        manifest = load_manifest(job.manifest, labels=job.labels or None,
                                 howto100m_template=job.howto100m_template or None)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"--manifest {job.manifest}: {error_text(e)}") from None
    if not manifest.rows:
        first = f"; first: {manifest.errors[0]['error']}" if manifest.errors else ""
        raise ConfigError(f"--manifest {job.manifest}: no usable rows ({len(manifest.errors)} bad{first})")
    return manifest


@dataclass
class ShardJob:
    """One run of a shard-writing job, as `run_shard_job` needs it."""

    name: str  # "preprocess": the console prefix, `jobs.<name>` for the output guard
    output: str  # the output folder URI
    config: dict[str, Any]  # the job's config and manifest fingerprint (`_progress/config.json`)
    owned: tuple[str, ...]  # what the job writes in the folder (the guard refuses foreign files)
    overwrite: bool
    items: pa.Table  # one row per unit of work (manifest row, distinct video): tasks read it in place
    per_shard: int  # items per shard
    work: Callable[[dict[str, Any], Any], dict[str, Any]]  # (shard spec, context) -> marker; a module-level function
    context: Any  # what `work` needs besides its items (sent to the object store once)
    stats: Callable[[dict[str, Any]], dict[str, Any]]  # marker -> the small stats a task returns
    line: Callable[[dict[str, Any]], str]  # stats -> the console text of a finished shard
    ray_timeout_s: float  # how long joining the Ray may take (`pipeline.raystart.connect`)
    num_cpus: float = 1.0
    memory: int = 0
    storage_outage_s: float = 300.0
    storage_backoff_s: float = 2.0  # the first step of the shared backoff while storage is down
    header: str = ""  # what the first console line says of the input
    before: Callable[[], None] | None = None  # writes what the job writes once the folder is claimed


@dataclass
class ShardRun:
    """What a run did: the whole plan, and the stats of the shards this run processed."""

    shards: list[tuple[int, int, int]]
    progress_dir: str
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def shard_task(plan: dict[str, Any], pos: int, work: Callable, context: Any, stats: Callable) -> dict[str, Any]:
    """Ray task: the pending shard at `pos` of the plan (its items read in place from the object
    store) -> `work`, its marker written, the marker's small stats."""
    outage.install(plan["outage"])
    index, lo, hi = (int(v) for v in plan["pending"][pos])
    spec = {"index": index, "lo": lo, "hi": hi, "items": plan["items"].slice(lo, hi - lo).to_pylist(),
            "output": plan["output"], "progress_dir": plan["progress_dir"]}
    marker = work(spec, context)
    retryable = sum(is_retryable(e["stage"]) for e in marker["errors"])
    marker = {"shard": index, **marker, "retryable": retryable}
    write_marker(plan["progress_dir"], index, marker, retryable=bool(retryable))
    return {"shard": index, "retryable": retryable, **stats(marker)}


def run_shard_job(job: ShardJob) -> ShardRun:
    """Claim the folder, run the pending shards (a storage outage is ridden through, see
    `pipeline.outage`), print one line per shard; returns the plan and this run's stats."""
    t0 = time.time()
    out = job.output.rstrip("/")
    claim_output(out, "_progress/config.json", job.config, overwrite=job.overwrite, job=f"jobs.{job.name}",
                 owned=job.owned)
    if job.before is not None:
        job.before()
    progress_dir = storage.join(out, "_progress")
    shards = plan_shards(job.items.num_rows, job.per_shard)
    pending = [s for s in shards if s[0] not in read_markers(progress_dir)[0]]
    print(f"[{job.name}] {job.header} in {len(shards)} shards of {job.per_shard}; {len(shards) - len(pending)} "
          f"already complete, {len(pending)} to do", flush=True)
    run = ShardRun(shards, progress_dir)
    if pending:
        from pipeline.raystart import connect

        connect(job.ray_timeout_s, job=f"jobs.{job.name}")  # ConfigError (exit 2) when that Ray does not answer
        handle = outage.start(job.storage_outage_s, first_wait_s=job.storage_backoff_s,
                              max_wait_s=8 * job.storage_backoff_s)
        plan = {"items": job.items, "pending": np.asarray(pending, np.int64).reshape(-1, 3),  # [shards, 3]
                "output": out, "progress_dir": progress_dir, "outage": handle}
        try:
            with outage.watch(handle, f"[{job.name}]"):
                results = run_shards(shard_task, plan, len(pending), job.work, job.context, job.stats,
                                     num_cpus=job.num_cpus, memory=job.memory)
                for n, r in enumerate(results, start=1):
                    run.results.append(r)
                    print(f"[{job.name}] shard {r['shard']:05d} done ({n}/{len(pending)}): {job.line(r)}", flush=True)
        finally:
            outage.stop(handle)
    run.seconds = time.time() - t0
    return run


def this_run_totals(run: ShardRun, keys: Sequence[str]) -> dict[str, Any]:
    """This run's share for summary.json: the shards it processed and the sums of `keys`."""
    return {"shards": len(run.results), **{k: sum(int(r.get(k, 0)) for r in run.results) for k in keys},
            "seconds": round(run.seconds, 3)}


def print_error_kinds(name: str, errors: Sequence[dict[str, Any]], limit: int = 10) -> None:
    """The error rows summed up by kind on the console (every row is in errors.parquet)."""
    if errors:
        print(f"[{name}] errors by kind ({len(errors)} rows):", flush=True)
        for line in error_kinds(errors, limit=limit):
            print(f"[{name}]   {line}", flush=True)


def job_main(cls: type, argv: Sequence[str] | None, *, prog: str, doc: str, examples: str,
             validate: Callable[[Any], Any], run: Callable[[Any], dict[str, Any]],
             result: Callable[[Any, dict[str, Any]], str]) -> int:
    """A shard job's entry point: parse (`--manifest` and `--output` required), check before Ray
    (a user error: one line, exit 2), run, print the `result` line; 0 even when videos failed."""
    try:
        job, _ = parse_job(cls, argv, prog=prog, doc=doc, examples=examples, required=("manifest", "output"))
        validate(job)
        summary = run(job)
    except (ConfigError, OutputConflict) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(result(job, summary), flush=True)
    return 0


def retry_note(summary: dict[str, Any]) -> str:
    """The words a result line gives the rows that a re-run retries (empty when none)."""
    n = summary["retryable"]
    return f" ({n} because storage was unavailable: run again to retry them)" if n else ""
