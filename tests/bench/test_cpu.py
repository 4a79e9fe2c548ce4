"""CPU accounting from /proc (bench/cpu.py): a process tree, and Ray Data's executor threads."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from bench.cpu import ExecutorThreads, thread_cpu, tree_cpu


def _burn(seconds: float) -> None:
    """Spin until this thread has used `seconds` of CPU (what /proc counts per thread)."""
    t0 = time.thread_time()
    while time.thread_time() - t0 < seconds:
        pass


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


def test_executor_threads_count_only_the_streaming_executor():
    ex = ExecutorThreads()
    workers = [threading.Thread(target=_burn, args=(0.4,), name="StreamingExecutor-dataset_x"),
               threading.Thread(target=_burn, args=(0.4,), name="consumer")]
    for w in workers:
        w.start()
    time.sleep(0.1)
    ex.sample()
    while workers[0].is_alive():
        ex.sample()  # sampled while it runs: its ticks after the last sample are lost when it exits
        time.sleep(0.02)
    for w in workers:
        w.join()
    assert 0.25 <= ex.seconds <= 0.6  # the executor-named thread's ~0.4 s, not the consumer's
    assert all(isinstance(name, str) and secs >= 0 for name, secs in thread_cpu().values())
