"""A storage outage across videos: every reader pauses on one shared backoff, reading goes on by
itself when storage answers, past --storage-outage-s the videos still open become retryable rows.

The monitor's rules are checked on the real `pipeline.outage.Monitor`; the job test runs
`jobs.preprocess` as its own driver on a fresh local Ray against S3 on loopback (moto) behind
the fault proxy, which answers every video GET with 503 for 10 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from pipeline import outage, storage
from pipeline.data.synthetic import make_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _monitor(bound_s: float = 60.0, first_wait_s: float = 0.2) -> outage.Monitor:
    return outage.Monitor(bound_s=bound_s, first_wait_s=first_wait_s, max_wait_s=1.0, min_sources=2,
                          window_s=60.0, probe_timeout_s=30.0)


def test_one_failing_video_keeps_its_own_retries_two_are_an_outage():
    m = _monitor()
    m.answered("s3://b/c.mp4", time.time())  # a video read fine: the store is up
    assert m.failed("s3://b/a.mp4", "OSError EBUSY", time.time()) == storage.RETRY  # isolated: its own retries
    assert m.failed("s3://b/a.mp4", "OSError EBUSY", time.time()) == storage.RETRY  # the same video again
    m.answered("s3://b/c.mp4", time.time())  # another video read fine: the store is still up
    assert m.failed("s3://b/b.mp4", "OSError EBUSY", time.time()) == storage.RETRY  # a's failure is forgotten
    assert m.failed("s3://b/d.mp4", "ECONNRESET", time.time()) == storage.RETRY  # another kind of failure
    assert m.failed("s3://b/e.mp4", "OSError EBUSY", time.time()) == storage.WAIT  # two videos, one way: down
    assert m.report()["state"] == outage.DOWN and m.report()["sources"] == 2
    assert m.failed("s3://b/b.mp4", "OSError EBUSY", time.time()) == storage.WAIT  # every reader now waits


def test_a_job_whose_first_reads_fail_is_in_an_outage_after_one_video_failed_twice():
    m = _monitor()  # no read of the job answered yet (its other readers may still be starting)
    assert m.failed("s3://b/a.mp4", "503", time.time()) == storage.RETRY
    assert m.failed("s3://b/a.mp4", "503", time.time()) == storage.WAIT


def test_one_probe_at_a_time_on_a_doubling_backoff_and_an_answer_ends_the_outage():
    m = _monitor(first_wait_s=0.2)
    for v in ("a", "b", "c"):
        m.failed(v, "503", time.time())
    assert m.ask("a")[0] == "wait"  # the first shared step has not passed
    time.sleep(0.25)
    assert m.ask("a") == ("go", 0.0)  # one reader tries again
    assert [m.ask(v)[0] for v in ("b", "c")] == ["wait", "wait"]  # the others keep waiting
    assert m.failed("a", "503", time.time()) == storage.WAIT  # the probe failed: the step doubles
    assert m.report()["wait_s"] == pytest.approx(0.4)
    time.sleep(0.45)
    assert m.ask("c") == ("go", 0.0)
    m.answered("c", time.time())  # storage answers: every reader goes on
    assert [m.ask(v)[0] for v in ("a", "b")] == ["go", "go"]
    r = m.report()
    assert r["state"] == outage.OK and r["outages"] == 1 and r["last_outage_s"] > 0.6


def test_past_the_bound_readers_give_up_and_a_late_answer_from_before_does_not_end_it():
    m = _monitor(bound_s=0.3)
    before = time.time()
    m.failed("a", "503", time.time())
    m.failed("b", "503", time.time())
    m.answered("c", before)  # told late, but it happened before the outage began
    assert m.report()["state"] == outage.DOWN
    time.sleep(0.35)
    assert m.ask("a") == ("give_up", 0.0)
    assert m.failed("new", "503", time.time()) == storage.GIVE_UP  # a new video: one try, then a retryable row
    m.answered("new2", time.time())  # the store answers again: reading goes on as before
    assert m.ask("a") == ("go", 0.0)


class _LocalGate(storage.ReadGate):
    """The shared gate's protocol on a Monitor in this process (threads as readers)."""

    def __init__(self, monitor: outage.Monitor):
        self.m, self.lock, self.paused = monitor, threading.Lock(), set()

    def wait(self, source):
        while source in self.paused:
            with self.lock:
                verdict, seconds = self.m.ask(source)
            if verdict == "go":
                return True
            if verdict == "give_up":
                return False
            time.sleep(seconds)
        return True

    def failed(self, source, exc):
        with self.lock:
            verdict = self.m.failed(source, outage.failure_kind(exc), time.time())
        if verdict == storage.WAIT:
            self.paused.add(source)
        return verdict

    def answered(self, source):
        self.paused.discard(source)
        with self.lock:
            self.m.answered(source, time.time())


def test_with_retries_rides_an_outage_longer_than_its_own_tries(monkeypatch):
    """Four readers, 2 tries 0.05 s apart each, storage down for 1 s: all deliver, few calls."""
    up_at = time.time() + 1.0
    calls: list[str] = []

    def read(source):
        def attempt():
            calls.append(source)
            if time.time() < up_at:
                raise ConnectionResetError("storage down")
            return source
        return attempt

    old = storage.set_read_gate(_LocalGate(_monitor(bound_s=30.0, first_wait_s=0.1)))
    try:
        results: dict[str, object] = {}

        def reader(name):
            try:
                results[name] = storage.with_retries(read(name), attempts=2, backoff_s=0.05, source=name)
            except Exception as e:  # noqa: BLE001
                results[name] = e

        threads = [threading.Thread(target=reader, args=(f"v{i}",)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=30)
    finally:
        storage.set_read_gate(old)
    assert results == {f"v{i}": f"v{i}" for i in range(4)}
    assert len(calls) <= 4 * 2 + 8 + 4  # each reader's tries, the probes, one last read each


def test_readers_in_ray_tasks_share_the_monitor_and_the_driver_sees_the_outage(ray_local):
    ray = ray_local
    handle = outage.start(30.0, first_wait_s=0.2)
    try:
        assert outage.status(handle) is None

        @ray.remote(num_cpus=0)
        def read_fails(h, source):  # a reader in a worker process
            outage.install(h)
            outage.install(h)  # idempotent
            return storage.read_gate().failed(source, ConnectionResetError("reset"))

        assert ray.get(read_fails.remote(handle, "s3://b/a.mp4")) == storage.RETRY  # one video: its own retries
        assert ray.get(read_fails.remote(handle, "s3://b/b.mp4")) == storage.WAIT  # two: the store is down
        line = outage.status(handle)
        assert line.startswith("storage unavailable for") and "2 videos" in line and "--storage-outage-s" in line
        old = storage.read_gate()
        outage.install(handle)  # the driver's own reads
        try:
            gate = storage.read_gate()
            assert gate.failed("s3://b/c.mp4", ConnectionResetError("reset")) == storage.WAIT
            gate.answered("s3://b/c.mp4")  # the store answers: the outage ends for every reader
        finally:
            storage.set_read_gate(old)
        assert outage.status(handle) is None and outage.report(handle)["outages"] == 1
    finally:
        outage.stop(handle)
    assert ray.get(read_fails.remote(handle, "s3://b/d.mp4")) == storage.RETRY  # monitor gone: own retries


def _job_argv(src: str, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.preprocess", "--manifest", storage.join(src, "train.csv"), "--output", out,
            "--num-frames", "4", "--sampling-rate", "4", "--short-side", "40", "--rows-per-shard", "1",
            "--num-cpus", "0.5", "--memory-mb", "64", "--storage-attempts", "3", "--storage-backoff-s", "1.0", *extra]


def _env() -> dict[str, str]:
    # a fresh local Ray of the job's own; the S3 client's own retries off (one GET per try), so
    # that a video's tries (3, 1 s then 2 s apart) give up after ~3 s, well inside the outage
    return {**os.environ, "RAY_ADDRESS": "local", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
            "PYTHONPATH": ROOT, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


@pytest.mark.slow  # a driver process with its own Ray, then a 10 s outage (1-2 min)
@pytest.mark.timeout(300)
def test_a_storage_outage_longer_than_every_videos_tries_costs_no_rerun(tmp_path, s3_bucket, s3_proxy):
    corpus = str(tmp_path / "corpus")
    make_corpus(corpus, videos=12, seconds=1.0, size=(64, 48), seed=2, val_fraction=0)
    src, out = f"s3://{s3_bucket}/corpus", f"s3://{s3_bucket}/clips"
    for name in ("train.csv", "labels.json", *[f"videos/{v}" for v in sorted(os.listdir(os.path.join(corpus, "videos")))]):
        storage.write_bytes_atomic(storage.join(src, name), open(os.path.join(corpus, name), "rb").read())

    s3_proxy.fail(503, path_contains=f"/{s3_bucket}/corpus/videos/")
    first_fault = s3_proxy.failed

    def heal_10_s_after_the_first_failed_read() -> None:
        deadline = time.time() + 200
        while s3_proxy.failed == first_fault and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(10.0)
        s3_proxy.heal()

    healer = threading.Thread(target=heal_10_s_after_the_first_failed_read, daemon=True)
    healer.start()
    try:
        proc = subprocess.run(_job_argv(src, out), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    finally:
        healer.join(timeout=220)
        s3_proxy.heal()
    printed = proc.stdout
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = "\n".join(line for line in printed.splitlines() if line.startswith("[preprocess]"))
    summary = storage.read_json(storage.join(out, "summary.json"))
    assert (summary["videos_ok"], summary["videos_failed"], summary["retryable"]) == (12, 0, 0), printed
    assert not storage.exists(storage.join(out, "errors.parquet"))
    # said once when storage went, once when it came back
    assert printed.count("storage unavailable (") == 1 and printed.count("storage answers again") == 1, printed
    # 4 readers at a time: at most their own 3 tries each, then one shared probe per backoff step
    # (1, 2, 4, 8 s), where each video's own tries alone would have spent 12 x 3 GETs and failed
    failed_gets = s3_proxy.failed - first_fault
    assert failed_gets <= 4 * 3 + 8, failed_gets
