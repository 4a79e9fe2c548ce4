"""HowTo100M scale on one machine: a 1.2 M-row task CSV whose videos are all missing.

    python -m bench.scale [--rows 1200000] [--epochs 15] [--skip-preprocess] [--workdir DIR]

1. writes a HowTo100M-like task CSV (`video_id,task_id`, 1059 tasks) and reads it as the jobs do
   (`load_manifest` with a path template into a folder with no videos);
2. preprocess planning, as `jobs.preprocess` does it before any task runs: shard plan, manifest
   fingerprint, Arrow manifest table put in the object store; time and driver RSS growth;
3. the 15-epoch training dataset (`bench.dataset.compare`, ours only: the peer needs ~6 GB);
4. the whole `jobs.preprocess` run at the README's TimeSformer-L settings (`--sampling cover
   --num-frames 96 --sampling-rate 32 --short-side 224`): every video must come back as an error
   row; wall time and the driver's peak RSS growth (sampled every 50 ms).

Each figure is printed with the machine load and its ratio to its target (<= 20 min
for the preprocess, <= 60 s and <= 2 GB for the dataset): a ratio <= 1 meets it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

from bench.dataset import _rss_mb, compare

TARGETS = {"preprocess_s": 20 * 60, "dataset_s": 60, "dataset_mb": 2048}


class PeakRSS:
    """The driver's RSS growth over a block, sampled every `every_s` (peak and at the end), in MB."""

    def __init__(self, every_s: float = 0.05):
        self.every_s, self.peak, self._stop = every_s, 0.0, threading.Event()

    def __enter__(self) -> "PeakRSS":
        self.start = _rss_mb()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, _rss_mb() - self.start)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb() - self.start)


def write_csv(path: str, rows: int) -> None:
    """A task CSV like HowTo100M's (no header, 11-character YouTube-like ids)."""
    with open(path, "w") as f:
        for i in range(rows):
            f.write(f"v{i:010d},{100000 + i % 1059}\n")


def _report(name: str, seconds: float, mb: float, target: str | None = None) -> None:
    ratio = f" ({seconds / TARGETS[target]:.2f} of the target)" if target else ""
    print(f"[scale] {name}: {seconds:.1f} s{ratio}, driver +{mb:.0f} MB peak; load {os.getloadavg()[0]:.1f}",
          flush=True)


def plan(job) -> None:
    """What `jobs.preprocess.run` does before its first task: manifest, plan, fingerprint, put."""
    import numpy as np
    import ray

    from jobs.preprocess import read_job_manifest
    from jobs.shards import manifest_fingerprint, plan_shards
    from pipeline.data.rows import manifest_table

    with PeakRSS() as rss:
        t0 = time.perf_counter()
        manifest = read_job_manifest(job)
        t_read = time.perf_counter() - t0
        shards = plan_shards(len(manifest.rows), job.rows_per_shard)
        manifest_fingerprint(manifest.rows)
        ref = ray.put({"rows": manifest_table(manifest.rows), "pending": np.asarray(shards, np.int64)})
        seconds = time.perf_counter() - t0
    print(f"[scale] manifest read {t_read:.1f} s; {len(manifest.rows)} rows in {len(shards)} shards", flush=True)
    _report("preprocess planning", seconds, rss.peak)
    del ref
    return manifest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_200_000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--rows-per-shard", type=int, default=0, help="default: the job's")
    p.add_argument("--skip-preprocess", action="store_true", help="planning and dataset only")
    p.add_argument("--workdir", default="", help="where the CSV and the output go (default: a temp folder)")
    args = p.parse_args()
    import ray

    from jobs.preprocess import PreprocessConfig, run

    work = args.workdir or tempfile.mkdtemp(prefix="bench-scale-")
    os.makedirs(work, exist_ok=True)
    csv, out = os.path.join(work, "howto100m_tasks.csv"), os.path.join(work, "out")
    t0 = time.perf_counter()
    write_csv(csv, args.rows)
    print(f"[scale] {args.rows} rows -> {csv} in {time.perf_counter() - t0:.1f} s; load {os.getloadavg()[0]:.1f}")
    job = PreprocessConfig(manifest=csv, output=out, howto100m_template=os.path.join(work, "videos", "{video_id}.mp4"),
                           sampling="cover", num_frames=96, sampling_rate=32, short_side=224, overwrite=True)
    if args.rows_per_shard:
        job.rows_per_shard = args.rows_per_shard
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
    manifest = plan(job)
    with PeakRSS() as rss:  # the peak while building, not only what stays (planning's garbage is reused)
        got = compare(manifest.rows, args.epochs, with_peer=False)
    _report(f"dataset {args.epochs} epochs", got["ours_s"], rss.peak, "dataset_s")
    print(f"[scale] dataset memory: {rss.peak / TARGETS['dataset_mb']:.2f} of the target", flush=True)
    del manifest
    if not args.skip_preprocess:
        with PeakRSS(every_s=0.2) as rss:
            t0 = time.perf_counter()
            summary = run(job)
            seconds = time.perf_counter() - t0
        assert summary["videos_failed"] == args.rows and summary["videos_ok"] == 0, summary
        print(f"[scale] every video reported: {summary['videos_failed']} error rows, {summary['shards']} shards")
        _report("missing-file preprocess", seconds, rss.peak, "preprocess_s")
    ray.shutdown()


if __name__ == "__main__":
    main()
