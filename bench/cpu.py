"""CPU seconds from Linux /proc: a process tree (the driver and its Ray processes) and the threads
of this process (the consumer apart from Ray Data's executor and Ray's own threads).

    total, tasks = tree_cpu()          # this process and all its descendants; the Ray task workers' part
    threads = DriverThreads()          # then threads.sample() while iterating: threads.seconds by kind
"""

from __future__ import annotations

import os
import threading

TICK = os.sysconf("SC_CLK_TCK")


def _stat(path: str) -> tuple[int, int] | None:
    """(ppid, utime + stime ticks) from a /proc stat file, None when it is gone."""
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _is_task_worker(pid: int) -> bool:
    """A Ray worker process that runs tasks (`ray::IDLE`, `ray::MapBatches(...)`), not an actor
    (Ray Data's stats and autoscaling actors) or an agent."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            name = f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return name.startswith("ray::") and "Actor" not in name and "Agent" not in name


def tree_cpu(root: int | None = None) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by `root` (default: this process) and all its live
    descendants, and the part of it in Ray task workers (the decode tasks: what grows with a node's
    cores; the rest, driver and Ray's daemons, is per node)."""
    root = root or os.getpid()
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(f"/proc/{p}/stat")) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total = tasks = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        ticks = stats.get(pid, (0, 0))[1]
        total += ticks
        tasks += ticks if pid != root and _is_task_worker(pid) else 0
        todo.extend(children.get(pid, []))
    return total / TICK, tasks / TICK


def tree_cpu_s(root: int | None = None) -> float:
    """CPU seconds of `root` (default: this process) and all its descendants (see `tree_cpu`)."""
    return tree_cpu(root)[0]


def thread_cpu() -> dict[int, tuple[str, float]]:
    """{thread id: (Python thread name or "", CPU seconds so far)} of this process's live threads."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        if (s := _stat(f"/proc/self/task/{tid}/stat")) is not None:
            out[int(tid)] = (names.get(int(tid), ""), s[1] / TICK)
    return out


class DriverThreads:
    """CPU seconds of this process's threads by kind, summed over `sample()` calls (sample often:
    a thread's ticks after its last sample are lost when it exits):

    executor: Ray Data's streaming-executor threads. Its scheduling loop polls at a steady rate
              while a dataset runs, so it costs CPU per second, not per clip.
    python:   every other Python thread (the main loop, Ray Data's batch-formatting threads): the
              consumer's work per batch.
    native:   threads Python does not know (Ray's core-worker I/O and polling threads).
    """

    EXECUTOR = "StreamingExecutor"

    def __init__(self) -> None:
        self.last = thread_cpu()
        self.seconds = {"executor": 0.0, "python": 0.0, "native": 0.0}

    def sample(self) -> None:
        now = thread_cpu()
        for tid, (name, secs) in now.items():
            kind = "executor" if name.startswith(self.EXECUTOR) else "python" if name else "native"
            self.seconds[kind] += secs - self.last.get(tid, (name, 0.0))[1]
        self.last = now
