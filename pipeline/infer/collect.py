"""Scored clip rows -> one output row per video, as soon as all of a video's clips are in (no Ray).

    collector = Collector(items_by_id, names, aggregate="mean_logits", top_k=5)
    for batch in scored_batches:               # any order, any mix of videos, repeats allowed
        for row in collector.add(batch):       # the videos this batch completed
            ...
    for row in collector.finish():             # videos that never completed: error rows
        ...

A scored batch has the clip columns of `pipeline.infer.decode` (without `frames`) plus `logits`
float32 [B, V, C] (V spatial views). A clip seen twice (a retried task gives its clips again) is counted once. A video's
decode error row completes it with an error row. Memory: the logits of the videos still open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from pipeline.data.errors import error_row
from pipeline.infer.outputs import failed_row, prediction_row

LOST = "worker"  # stage of a video whose clips did not all come back (retryable)
MODEL = "model"  # stage of the videos left when the model actors failed past their restarts (retryable)


@dataclass
class _Open:
    logits: np.ndarray  # [K, V, C]: per clip, per spatial view
    have: np.ndarray  # bool [K]: clips scored
    starts: np.ndarray  # [K] seconds
    ends: np.ndarray  # [K]
    padded: np.ndarray  # [K] frames repeated
    meta: dict[str, Any] = field(default_factory=dict)


class Collector:
    """Clip logits of the videos in flight, and the rows of the videos complete."""

    def __init__(self, items: Mapping[str, dict[str, Any]], names: Sequence[str], *, aggregate: str,
                 top_k: int):
        self.items, self.names, self.method, self.k = items, names, aggregate, top_k
        self.open: dict[str, _Open] = {}
        self.finished: set[str] = set()
        self.clips = 0  # distinct clips scored

    def add(self, batch: Mapping[str, np.ndarray]) -> Iterator[dict[str, Any]]:
        """Take one scored batch; yield the output rows of the videos it completed."""
        for j, vid in enumerate(batch["video_id"]):
            vid = str(vid)
            if vid in self.finished or vid not in self.items:
                continue
            if batch["error"][j]:
                error = error_row(self.items[vid]["uri"], str(batch["stage"][j]), str(batch["error"][j]))
                yield self._close(vid, failed_row(vid, error, self.items[vid].get("target")))
                continue
            v = self.open.get(vid) or self._start(vid, int(batch["num_clips"][j]), batch["logits"][j].shape)
            c = int(batch["clip_index"][j])
            if not v.have[c]:
                self.clips += 1
            v.have[c] = True
            v.logits[c] = batch["logits"][j]
            v.starts[c], v.ends[c], v.padded[c] = batch["start_sec"][j], batch["end_sec"][j], batch["num_padded"][j]
            v.meta = {"duration": float(batch["duration"][j]), "fps": float(batch["fps"][j]),
                      "truncated": bool(v.meta.get("truncated")) or bool(batch["truncated"][j])}
            if v.have.all():
                meta = {**v.meta, "starts": v.starts.tolist(), "ends": v.ends.tolist(),
                        "num_padded": int(v.padded.sum())}
                yield self._close(vid, prediction_row(self.items[vid], meta, v.logits, self.names, self.method,
                                                      self.k))

    def finish(self, stage: str = LOST, reason: str = "") -> Iterator[dict[str, Any]]:
        """Error rows (`stage`, retryable) for the videos given (`items`) that have no row yet: their
        clips were lost on the way, or the run ended early for `reason`."""
        for vid, item in self.items.items():
            if vid in self.finished:
                continue
            v = self.open.get(vid)
            got = f"{int(v.have.sum())} of {len(v.have)} clips" if v is not None else "no clips"
            text = f"{reason}; " if reason else ""
            error = error_row(item["uri"], stage, f"{text}scores incomplete: {got} came back")
            yield self._close(vid, failed_row(vid, error, item.get("target")))

    def _start(self, vid: str, num_clips: int, view_shape: tuple[int, ...]) -> _Open:
        k = max(1, num_clips)
        v = _Open(np.zeros((k, *view_shape), np.float32), np.zeros(k, bool), np.zeros(k), np.zeros(k),
                  np.zeros(k, np.int64))
        self.open[vid] = v
        return v

    def _close(self, vid: str, row: dict[str, Any]) -> dict[str, Any]:
        self.open.pop(vid, None)
        self.finished.add(vid)
        return row
