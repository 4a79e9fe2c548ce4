"""Which clips each optimizer step consumed (`loop.record_clips`), across restarts (no Ray).

Every worker keeps `(step, epoch, video_id, clip_index)` of the clips it trains on and writes
them at each checkpoint to `<run folder>/clips/<attempt>-r<rank>-s<step>.json`. A restarted
attempt trains again the steps after its checkpoint; `consumed_clips` keeps, for every step,
the records of the latest attempt that took it, i.e. the clips the final model was trained on.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from pipeline import storage


class ClipLog:
    """One worker's clip records since its last write."""

    def __init__(self, run_dir: str, rank: int, attempt: int):
        self.run_dir, self.rank, self.attempt = run_dir, rank, attempt
        self.rows: list[list[Any]] = []

    def add(self, step: int, batch: dict[str, Any]) -> None:
        if batch.get("dummy"):
            return
        for e, v, c in zip(batch["epoch"], batch["video_id"], batch["clip_index"]):
            self.rows.append([step, int(e), str(v), int(c)])

    def write(self, step: int) -> None:
        """Write the records of the steps up to `step`."""
        if not self.rows:
            return
        name = f"{self.attempt:016d}-r{self.rank}-s{step:08d}.json"
        storage.write_bytes_atomic(storage.join(self.run_dir, "clips", name),
                                   json.dumps({"attempt": self.attempt, "rows": self.rows}).encode())
        self.rows = []


def consumed_clips(run_dir: str) -> dict[int, list[tuple[int, str, int]]]:
    """step -> the (epoch, video_id, clip_index) the step consumed, from its latest attempt."""
    folder = storage.join(run_dir, "clips")
    fs, path = storage.filesystem(folder)
    by_attempt: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    if fs.exists(path):
        for entry in sorted(fs.ls(path, detail=False)):
            doc = json.loads(storage.read_bytes(storage.join(folder, entry.rstrip("/").rsplit("/", 1)[-1])))
            for step, epoch, vid, clip in doc["rows"]:
                by_attempt[doc["attempt"]][step].append((epoch, vid, clip))
    out: dict[int, list[tuple[int, str, int]]] = {}
    for attempt in sorted(by_attempt):  # later attempts replace the steps they took again
        out.update(by_attempt[attempt])
    return out
