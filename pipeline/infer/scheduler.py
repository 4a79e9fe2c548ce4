"""The driver's loop: decode tasks -> cross-video batches on the least loaded actor -> rows in part files.

    scheduler = Scheduler(actors, spec, cfg, output, names, result)
    scheduler.run(items, bad_rows)        # returns when every item has a row
    scheduler.flush_rows(final=True)      # the last, partial part file

Backpressure: at most `max_videos` videos are decoding or decoded-but-not-scored, their clips
stay within `cfg.max_mb_in_flight` (`may_decode`: bytes, not videos, as one HowTo100M video can
hold a thousand clips), and at most `cfg.max_batches_per_actor` batches are queued on each actor
(`ray.wait` on all), so the memory held is bounded whatever the corpus size. Every item gets exactly one row: a prediction row when
all its clips are scored, else an error row (decode failed, a clip failed `cfg.clip_retries`
times, or no model actor is left).

A lost actor (its process or node died; Ray restarts it, up to `cfg.actor_restarts`): the clips of
its failed calls are queued again, and the actor gets no call until a probe (`info`) answers, so
the time Ray needs to notice the loss and restart the actor (`ActorUnavailableError`s meanwhile)
costs no clip retries. Probes that fail are repeated with backoff (`probe_delay`); after
`cfg.actor_restarts + 2` failed probes in a row the actor is given up (Ray's restarts are spent).
Every few seconds the loop shows its progress (`progress.Progress`: a console line, `progress.json`).
`pack_batch`, `pick_actor`, `probe_delay`, `may_decode` and `default_max_videos` are the pure rules
the loop follows.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Sequence

import numpy as np
import ray

from pipeline.data.clips import ClipConfig
from pipeline.data.errors import error_text
from pipeline.infer.config import InferConfig, InferResult
from pipeline.infer.outputs import error_row, plot_uri, prediction_row, write_part
from pipeline.infer.progress import Progress
from pipeline.infer.tasks import decode_video_task, plot_task

DEAD_PROBES = 3  # probes in a row that find a lost actor dead before it is given up
NO_ACTOR = "no model actor left: every actor died past its restarts (actor_restarts)"


def default_max_videos(cfg: InferConfig, cluster_cpus: float) -> int:
    """Videos decoding or waiting for scores at once: the configured bound, else 2 x decode slots + 2."""
    slots = max(1, int(cluster_cpus // cfg.decode_num_cpus))
    return cfg.max_videos_in_flight or 2 * slots + 2


def may_decode(held_bytes: int, decoding: int, open_videos: int, video_bytes: float, budget_bytes: int,
               max_videos: int) -> bool:
    """Whether one more decode may start: fewer than `max_videos` videos in flight, and the clips
    held (`held_bytes`) plus what the decoding videos and the new one may bring (each as large as
    `video_bytes`: the mean video so far, so that one rare long video, once scored, does not
    throttle the rest of the run) within `budget_bytes` (0: no byte bound). With nothing in
    flight a video always starts, so a video larger than the budget still goes."""
    in_flight = decoding + open_videos
    if in_flight == 0:
        return True
    if in_flight >= max_videos:
        return False
    return not budget_bytes or held_bytes + (decoding + 1) * video_bytes <= budget_bytes


def probe_delay(failures: int, base_s: float = 0.5, cap_s: float = 8.0) -> float:
    """Seconds before the next probe of a lost actor after `failures` failed probes in a row."""
    return min(cap_s, base_s * 2 ** max(0, failures - 1)) if failures else 0.0


def pick_actor(load: Sequence[int], queued: int, batch_size: int, max_per_actor: int,
               decoding: bool) -> int | None:
    """The least loaded actor if a batch may go to it now, else None.

    A full batch goes to an actor with room; a partial one only to an idle actor, or when no
    decode is running (nothing else can arrive to fill it).
    """
    a = min(range(len(load)), key=lambda i: load[i])
    if load[a] >= max_per_actor:
        return None
    if queued >= batch_size or load[a] == 0 or not decoding:
        return a
    return None


def pack_batch(queue: deque[tuple[str, int]], batch_size: int, open_ids: Collection[str]) -> dict[str, list[int]]:
    """Pop up to `batch_size` `(video_id, clip index)` from `queue`; group the indices by video
    (in queue order), dropping the clips of videos no longer open (they already failed)."""
    groups: dict[str, list[int]] = {}
    for _ in range(min(batch_size, len(queue))):
        vid, k = queue.popleft()
        if vid in open_ids:
            groups.setdefault(vid, []).append(k)
    return groups


@dataclass
class _Video:
    item: dict[str, Any]
    meta: dict[str, Any]
    clips_ref: Any
    logits: np.ndarray  # [K, C], filled as batches come back
    remaining: int
    nbytes: int  # its decoded clips


class Scheduler:
    """All the in-flight state of one inference run, and the loop that moves it along."""

    def __init__(self, actors: list[Any], spec: ClipConfig, cfg: InferConfig, output: str,
                 names: Sequence[str], result: InferResult, max_videos: int | None = None):
        self.actors, self.spec, self.cfg, self.output, self.names = actors, spec, cfg, output, names
        self.result = result  # counts and peaks are added to it
        self.max_videos = max_videos or default_max_videos(cfg, ray.cluster_resources().get("CPU", 1))
        self.pending: deque[dict[str, Any]] = deque()  # items not yet decoding
        self.decoding: dict[Any, tuple[dict[str, Any], Any]] = {}  # meta ref -> (item, clips ref)
        self.open: dict[str, _Video] = {}  # decoded, waiting for scores
        self.clip_queue: deque[tuple[str, int]] = deque()  # (video_id, clip index) not yet sent
        self.calls: dict[Any, tuple[int, list[tuple[str, int]]]] = {}  # result ref -> (actor, clips)
        self.load = [0] * len(actors)  # calls queued per actor
        self.busy = [0.0] * len(actors)  # model seconds per actor
        self.rows: list[dict[str, Any]] = []  # finished, not yet in a part file
        self.plot_refs: list[Any] = []
        self.sends: dict[tuple[str, int], int] = {}  # (video_id, clip) -> failed actor calls so far
        self.finished = 0  # videos with their row (this run)
        self.down: dict[int, list[int]] = {}  # lost actor -> [failed probes, probes that found it dead]
        self.next_probe: dict[int, float] = {}  # lost actor -> when to probe it next (monotonic s)
        self.probes: dict[Any, int] = {}  # probe ref -> actor
        self.gone: set[int] = set()  # actors given up (their restarts are spent)
        self.held_bytes = 0  # decoded clips of the open videos
        self.decoded_bytes, self.decoded = 0, 0  # clips of all videos decoded so far, and their count

    def run(self, items: Iterable[dict[str, Any]], rows: Iterable[dict[str, Any]] = ()) -> None:
        """Score every item; `rows` (already finished, e.g. bad manifest lines) go into the parts too.
        Returns when nothing is pending or in flight; rows short of a part stay for `flush_rows`."""
        self.pending.extend(items)
        self.rows.extend(rows)
        self.finished += len(self.rows)
        progress = Progress(self.output, len(self.pending) + len(self.rows), self.result.skipped)
        while True:
            progress.update(self.finished, self.result.clips, self.busy)
            self.submit_decodes()
            self.send_probes()
            self.send_batches()
            waiting = list(self.decoding) + list(self.calls) + list(self.probes)
            wait_s = progress.every_s
            if self.next_probe:  # a lost actor waits for its next probe
                wait_s = min(wait_s, max(0.0, min(self.next_probe.values()) - time.monotonic()))
            if not waiting:
                if self.next_probe:
                    time.sleep(wait_s)
                    continue
                if self.clip_queue:  # cannot happen: send_batches flushes when nothing is in flight
                    raise RuntimeError("clips queued with no work in flight")
                if not self.pending:
                    progress.update(self.finished, self.result.clips, self.busy, final=True)
                    return
                continue
            ready, _ = ray.wait(waiting, num_returns=1, timeout=wait_s)
            for ref in ready:
                if ref in self.decoding:
                    self.on_decoded(ref)
                elif ref in self.probes:
                    self.on_probe(ref)
                else:
                    self.on_scored(ref)
            self.flush_rows()

    def submit_decodes(self) -> None:
        """Start decode tasks while `may_decode` allows (videos and bytes in flight)."""
        budget = self.cfg.max_mb_in_flight * 2**20
        mean = self.decoded_bytes / max(1, self.decoded)
        while self.pending and may_decode(self.held_bytes, len(self.decoding), len(self.open), mean, budget,
                                          self.max_videos):
            item = self.pending.popleft()
            meta_ref, clips_ref = decode_video_task.options(num_cpus=self.cfg.decode_num_cpus).remote(
                item, self.spec)
            self.decoding[meta_ref] = (item, clips_ref)
        in_flight = len(self.decoding) + len(self.open)
        self.result.peak_videos_in_flight = max(self.result.peak_videos_in_flight, in_flight)

    def send_batches(self) -> None:
        """Send queued clips, in batches of any videos, to the least loaded actors with room."""
        cfg = self.cfg
        while self.clip_queue:
            load = [cfg.max_batches_per_actor if i in self.down else n for i, n in enumerate(self.load)]
            a = pick_actor(load, len(self.clip_queue), cfg.batch_size, cfg.max_batches_per_actor,
                           bool(self.decoding))
            if a is None:
                return
            groups = pack_batch(self.clip_queue, cfg.batch_size, self.open)
            if not groups:
                continue
            parts = [(self.open[vid].clips_ref, ks) for vid, ks in groups.items()]
            ref = self.actors[a].score.remote(parts)
            self.calls[ref] = (a, [(vid, k) for vid, ks in groups.items() for k in ks])
            self.load[a] += 1
            self.result.peak_batches_per_actor = max(self.result.peak_batches_per_actor, self.load[a])

    def on_decoded(self, ref: Any) -> None:
        """A decode task ended: queue the video's clips, or finish it with an error row."""
        item, clips_ref = self.decoding.pop(ref)
        try:
            meta = ray.get(ref)
        except ray.exceptions.RayError as e:  # the worker died (e.g. out of memory)
            meta = {"error": error_text(e), "stage": "decode.worker"}
        self.result.decode_s += meta.get("decode_s", 0.0)
        if not meta.get("error") and len(self.gone) == len(self.actors):
            meta = {"error": NO_ACTOR, "stage": "model"}
        if meta.get("error"):
            self.finish(error_row(item["video_id"], item["uri"], meta["stage"], meta["error"], item.get("target")))
            return
        k, nbytes = len(meta["starts"]), meta.get("nbytes", 0)
        self.held_bytes += nbytes
        self.decoded_bytes, self.decoded = self.decoded_bytes + nbytes, self.decoded + 1
        self.result.peak_mb_in_flight = max(self.result.peak_mb_in_flight, self.held_bytes / 2**20)
        logits = np.zeros((k, len(self.names)), np.float32)
        self.open[item["video_id"]] = _Video(item, meta, clips_ref, logits, k, nbytes)
        self.clip_queue.extend((item["video_id"], j) for j in range(k))

    def on_scored(self, ref: Any) -> None:
        """An actor call ended: store its clip logits and finish the videos now complete (or
        finish every video of the batch with an error row when the actor failed)."""
        a, batch = self.calls.pop(ref)
        self.load[a] -= 1
        try:
            logits, seconds = ray.get(ref)
            self.busy[a] += seconds
        except ray.exceptions.RayError as e:  # the call failed, or its actor was lost (process, node)
            if isinstance(e, ray.exceptions.RayActorError):
                self.lost(a)
            batch, err = self.resend(batch), error_text(e)
            logits = None
        for j, (vid, k) in enumerate(batch):
            v = self.open.get(vid)
            if v is None:  # already failed by an earlier batch
                continue
            if logits is None:
                self.finish(error_row(vid, v.item["uri"], "model", err, v.item.get("target")))
                self.close(vid)
                continue
            v.logits[k] = logits[j]
            v.remaining -= 1
            self.result.clips += 1
            if v.remaining == 0:
                row = prediction_row(v.item, v.meta, v.logits, self.names, self.cfg.aggregate, self.cfg.top_k)
                self.finish(row, v.item)
                self.close(vid)  # drops the clips ref: the object store frees it

    def resend(self, batch: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Queue a failed call's clips again, first in line; returns those out of retries (their
        videos become error rows)."""
        exhausted = []
        for vid, k in reversed(batch):
            self.sends[(vid, k)] = self.sends.get((vid, k), 0) + 1
            if self.sends[(vid, k)] > self.cfg.clip_retries:
                exhausted.append((vid, k))
            elif vid in self.open:
                self.clip_queue.appendleft((vid, k))
                self.result.clips_resent += 1
        return exhausted[::-1]

    def lost(self, a: int) -> None:
        """Actor `a` failed a call: no calls to it until a probe answers (the first one now)."""
        if a not in self.down:
            self.down[a] = [0, 0]
            self.next_probe[a] = time.monotonic()

    def send_probes(self) -> None:
        """Probe the lost actors whose time has come (a probe waits while Ray restarts the actor)."""
        now = time.monotonic()
        for a, at in list(self.next_probe.items()):
            if at <= now:
                del self.next_probe[a]
                self.probes[self.actors[a].info.remote()] = a

    def on_probe(self, ref: Any) -> None:
        """A probe ended: the actor is back, or probed again later, or (found dead
        `DEAD_PROBES` times in a row) given up; with no actor left every open video fails."""
        a = self.probes.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as e:
            failed = self.down[a]
            failed[0] += 1
            failed[1] = failed[1] + 1 if isinstance(e, ray.exceptions.ActorDiedError) else 0
            if failed[1] < DEAD_PROBES:
                self.next_probe[a] = time.monotonic() + probe_delay(failed[0])
                return
            self.gone.add(a)
            if len(self.gone) == len(self.actors):
                self.fail_open(NO_ACTOR)
            return
        del self.down[a]

    def fail_open(self, reason: str) -> None:
        """Finish every open and pending video with an error row (nothing can score them)."""
        for vid, v in self.open.items():
            self.finish(error_row(vid, v.item["uri"], "model", reason, v.item.get("target")))
        while self.pending:
            item = self.pending.popleft()
            self.finish(error_row(item["video_id"], item["uri"], "model", reason, item.get("target")))
        self.open.clear()
        self.clip_queue.clear()
        self.held_bytes = 0

    def close(self, vid: str) -> None:
        """A video has its row: forget it and its clips."""
        self.held_bytes -= self.open.pop(vid).nbytes

    def finish(self, row: dict[str, Any], item: dict[str, Any] | None = None) -> None:
        """A video's one row is ready; with `cfg.plot` the timeline plot of an ok row starts now
        (drawn over the item's known `segments`, if any)."""
        self.rows.append(row)
        self.finished += 1
        if self.cfg.plot and row["status"] == "ok":
            segments = item.get("segments") if item else None
            self.plot_refs.append(plot_task.remote(row, self.names, plot_uri(self.output, row["video_id"]),
                                                   segments))

    def flush_rows(self, final: bool = False) -> None:
        """Write full parts (everything when final); a part on disk implies its plots are."""
        size = self.cfg.part_size
        while self.rows and (len(self.rows) >= size or final):
            chunk, self.rows = self.rows[:size], self.rows[size:]
            if self.plot_refs:
                ray.get(self.plot_refs)
                self.plot_refs.clear()
            write_part(self.output, chunk)
            self.result.parts_written += 1
            self.result.processed += len(chunk)
