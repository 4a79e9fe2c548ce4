"""Shard bookkeeping shared by the jobs that write an output folder shard by shard
(`jobs.preprocess`, `jobs.transcode`): the plan, the names, the completion markers, and the
runner that executes pending shards as plain Ray tasks.

A shard is a fixed group of consecutive manifest rows (or videos). Each writes its files and then
`_progress/shard-<i>.json`; a shard whose rows met a storage outage writes `shard-<i>.partial.json`
instead, so a re-run redoes exactly the shards without a complete marker.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline import storage
from pipeline.data.errors import errors_table

PARTIAL = ".partial.json"  # marker suffix of a shard with rows to retry (storage was unavailable)


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


def shard_index(uri: str) -> int:
    """The shard number in a marker or data file name (`shard-00012.json`, `shard-00012-003.parquet`)."""
    return int(os.path.basename(uri)[len("shard-"):].split(".")[0].split("-")[0])


def shard_name(index: int, part: int | None = None) -> str:
    """`shard-00012` or, for a data file, `shard-00012-003.parquet`."""
    return f"shard-{index:05d}" if part is None else f"shard-{index:05d}-{part:03d}.parquet"


def jsonable(obj: Any) -> Any:
    """What the object reads back as from JSON (tuples -> lists), for config comparison."""
    return json.loads(json.dumps(obj))


def read_markers(progress_dir: str) -> tuple[set[int], set[int]]:
    """(complete, partial) shard numbers, from one listing of the progress folder."""
    complete, partial = set(), set()
    for uri in storage.list_files(progress_dir, (".json",)):
        name = os.path.basename(uri)
        if name.startswith("shard-"):
            (partial if name.endswith(PARTIAL) else complete).add(shard_index(name))
    return complete, partial


def load_markers(progress_dir: str, indices: Iterable[int], *, skip_missing: bool = False) -> list[dict[str, Any]]:
    """The markers of shards `indices` (complete, else partial), read concurrently after one
    listing: object stores answer many GETs in flight, not one by one. A shard without a marker
    is an error unless `skip_missing`."""
    complete, partial = read_markers(progress_dir)
    if skip_missing:
        indices = [i for i in indices if i in complete or i in partial]
    uris = [storage.join(progress_dir, shard_name(i) + (".json" if i in complete else PARTIAL)) for i in indices]
    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(storage.read_json, uris))


def write_error_table(out: str, errors: list[dict[str, str]]) -> None:
    """`<out>/errors.parquet` with the run's error rows, or no such file when there are none."""
    err_uri = storage.join(out, "errors.parquet")
    if errors:
        storage.write_parquet_atomic(err_uri, errors_table(errors))
    else:
        storage.remove(err_uri)


def write_marker(progress_dir: str, index: int, marker: dict[str, Any], *, retryable: bool) -> None:
    """The shard's marker: complete, or partial (rows to retry) and the complete one left absent."""
    storage.write_json(storage.join(progress_dir, shard_name(index) + (PARTIAL if retryable else ".json")), marker)
    if not retryable:
        storage.remove(storage.join(progress_dir, shard_name(index) + PARTIAL))


def max_in_flight(cluster_cpus: float, num_cpus: float) -> int:
    """Shard tasks submitted at once: twice the shard slots of the cluster, plus 2 (the driver
    holds O(this) refs, and new nodes are used as they come: it is re-read every few seconds)."""
    return 2 * max(1, int(cluster_cpus // num_cpus)) + 2


def run_shards(task: Callable[..., dict[str, Any]], plan: dict[str, Any], count: int, *args: Any,
               num_cpus: float, memory: int | None) -> Iterator[dict[str, Any]]:
    """Run `task(plan, pos, *args)` for the `count` pending shards (pos 0..count-1) as plain Ray
    tasks, a bounded number in flight; yields each task's small stats as it ends.

    The plan and the args go to the object store once (keep the plan's bulk in Arrow or numpy
    buffers: tasks read them in place). A task whose worker or node died is retried by Ray
    (`max_retries`) and rewrites the same files. Plain tasks cost ~1 ms each where a Ray Data
    block costs ~45 ms (docs/RAY.md): 18,750 HowTo100M shards would spend ~15 min on that alone.
    """
    import ray

    remote = ray.remote(task).options(num_cpus=num_cpus, memory=memory or None, max_retries=5)
    plan_ref, arg_refs = ray.put(plan), [ray.put(a) for a in args]
    in_flight: list[Any] = []
    pos, limit, checked = 0, 0, 0.0
    while pos < count or in_flight:
        if time.monotonic() - checked > 5.0:  # the cluster may have grown or shrunk
            limit, checked = max_in_flight(ray.cluster_resources().get("CPU", 1), num_cpus), time.monotonic()
        while pos < count and len(in_flight) < limit:
            in_flight.append(remote.remote(plan_ref, pos, *arg_refs))
            pos += 1
        done, in_flight = ray.wait(in_flight, num_returns=1)
        yield ray.get(done[0])
