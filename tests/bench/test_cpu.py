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
        deadline = time.monotonic() + 20  # the child spins 0.5 s of CPU, then sleeps (still alive: counted)
        while (total := tree_cpu())[0] - before < 0.45 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait()
    assert total[0] - before >= 0.45
    assert total[1] == 0  # not a Ray task worker


def test_driver_threads_split_the_executor_from_the_consumer():
    threads = DriverThreads()
    burned = [threading.Event(), threading.Event()]
    release = threading.Event()

    def work(seconds: float, done: threading.Event) -> None:
        _burn(seconds)
        done.set()
        release.wait()  # alive until sampled: a thread's ticks after its last sample are lost when it exits

    workers = [threading.Thread(target=work, args=(0.4, burned[0]), name="StreamingExecutor-dataset_x"),
               threading.Thread(target=work, args=(0.2, burned[1]), name="consumer")]
    for w in workers:
        w.start()
    while not all(e.is_set() for e in burned):
        threads.sample()
        time.sleep(0.02)
    threads.sample()
    release.set()
    for w in workers:
        w.join()
    assert 0.35 <= threads.seconds["executor"] <= 0.5  # the executor-named thread's 0.4 s
    assert 0.15 <= threads.seconds["python"] <= 0.4  # the consumer's 0.2 s (+ this loop), not the executor's
    assert all(isinstance(name, str) and secs >= 0 for name, secs in thread_cpu().values())
