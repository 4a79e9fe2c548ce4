"""CPU accounting from /proc (bench/cpu.py): a process tree, and Ray Data's executor threads."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time

from bench.cpu import DriverThreads, thread_cpu, tree_cpu


def _burn(seconds: float) -> None:
    """Use `seconds` of this thread's CPU (what /proc counts per thread) in hashing, which releases
    the GIL: threads spinning in Python would mostly wait for each other."""
    data, t0 = bytes(1 << 20), time.thread_time()
    while time.thread_time() - t0 < seconds:
        hashlib.sha256(data).digest()


def test_tree_cpu_counts_a_childs_cpu():
    before, _ = tree_cpu()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\n"
                              "while time.process_time() - t < 0.5: pass\ntime.sleep(30)"])
    try:
        time.sleep(2.0)  # the child spins 0.5 s of CPU, then sleeps (still alive: counted)
        total, tasks = tree_cpu()
    finally:
        child.kill()
        child.wait()
    assert total - before >= 0.4
    assert tasks == 0  # not a Ray task worker


def test_driver_threads_split_the_executor_from_the_consumer():
    threads = DriverThreads()
    workers = [threading.Thread(target=_burn, args=(0.4,), name="StreamingExecutor-dataset_x"),
               threading.Thread(target=_burn, args=(0.2,), name="consumer")]
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        threads.sample()  # sampled while they run: a thread's ticks after the last sample are lost when it exits
        time.sleep(0.02)
    for w in workers:
        w.join()
    assert 0.3 <= threads.seconds["executor"] <= 0.6  # the executor-named thread's ~0.4 s
    assert 0.1 <= threads.seconds["python"] <= 0.5  # the consumer's ~0.2 s (+ this loop), not the executor's
    assert all(isinstance(name, str) and secs >= 0 for name, secs in thread_cpu().values())
