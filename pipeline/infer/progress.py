"""Progress of an inference run a person can follow (no Ray): one console line and `progress.json`
in the output every few seconds, and once more at the end.

    [infer] videos 120/400 (35 done before) | 96.2 clips/s | actor idle 4% | ETA 3m10s
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence, TextIO

from pipeline import storage
from pipeline.progress import eta_seconds, format_duration

PROGRESS_FILE = "progress.json"


class Progress:
    """Counts of one run, shown at most every `every_s` seconds (and always at the first and last)."""

    def __init__(self, output: str, total: int, skipped: int = 0, *, every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, stream: TextIO | None = None):
        self.output, self.total, self.skipped, self.every_s = output, total, skipped, every_s
        self.clock, self.stream = clock, stream
        self.t0 = clock()
        self.last: float | None = None
        self.lock = threading.Lock()

    def update(self, done: int, clips: int, busy_s: Sequence[float], *, final: bool = False) -> dict[str, Any] | None:
        """Show the state when it is time (or `final`); returns what was shown, else None."""
        with self.lock:
            now = self.clock()
            if not final and self.last is not None and now - self.last < self.every_s:
                return None
            self.last = now
            return self._show(now, done, clips, busy_s, final)

    def _show(self, now: float, done: int, clips: int, busy_s: Sequence[float], final: bool) -> dict[str, Any]:
        elapsed = max(now - self.t0, 1e-9)
        idle = 1.0 - sum(busy_s) / (elapsed * len(busy_s)) if busy_s else 1.0
        state = {"videos_done": done, "videos_total": self.total, "done_before": self.skipped,
                 "clips": clips, "clips_per_s": clips / elapsed, "actor_idle": min(1.0, max(0.0, idle)),
                 "elapsed_s": elapsed, "eta_s": eta_seconds(done, self.total, elapsed) if not final else 0.0,
                 "finished": final, "time": time.time()}
        print(self.line(state), file=self.stream or sys.stdout, flush=True)
        storage.write_json(storage.join(self.output, PROGRESS_FILE), state)
        return state

    @contextlib.contextmanager
    def ticking(self, state: Callable[[], tuple[int, int, Sequence[float]]]) -> Iterator[None]:
        """While the block runs, show `state()` (done, clips, busy seconds) every `every_s` even when
        nothing finishes (e.g. while the autoscaler brings up the first GPU node)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.every_s):
                try:
                    self.update(*state())
                except RuntimeError:  # the state changed while it was read: the next tick shows it
                    continue

        thread = threading.Thread(target=loop, name="infer-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)

    @staticmethod
    def line(s: dict[str, Any]) -> str:
        """The console line of a state."""
        before = f" ({s['done_before']} done before)" if s["done_before"] else ""
        end = "done" if s["finished"] else f"ETA {format_duration(s['eta_s'])}"
        return (f"[infer] videos {s['videos_done']}/{s['videos_total']}{before} | {s['clips_per_s']:.1f} clips/s "
                f"| actor idle {s['actor_idle']:.0%} | {end}")
