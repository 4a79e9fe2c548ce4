"""One view of the store's health shared by every reader of a job, across processes and nodes (Ray).

    handle = outage.start(bound_s=300, first_wait_s=2.0)  # in the driver: one small actor per job
    outage.install(handle)     # at the start of a Ray task / actor method: this process's storage
                               # reads (`storage.with_retries`) use the shared gate; idempotent
    line = outage.status(handle)   # a console line while the store is down, else None
    with outage.watch(handle, "[preprocess]"):  # or: print the changes (down, back) once each
        ...
    outage.stop(handle)

A read that fails transiently tells the job's monitor (a named actor in the job's namespace,
0 CPUs). When reads of `min_sources` different videos have failed transiently in the same way
(one failure kind, e.g. `OSError EBUSY` for a 503) with no read answered since, or, before any
read of the job was answered, one video has failed twice (a job that starts during an outage,
its readers not all up yet), the store is down: every reader that fails, or is paused, waits on ONE shared backoff (`first_wait_s`,
doubling up to `max_wait_s`); at each step one reader alone tries again (the probe). Its success
ends the outage for all, and reading goes on by itself: an outage costs about its own duration
(plus at most one backoff step), not the per-video tries of every video it touches, and the
store sees one read per step instead of a storm. An isolated failure (one video, others fine)
keeps only the read's own retries. Past `bound_s` (`--storage-outage-s`) the outage is given
up: the videos still open, and each new one after a single failed try, raise
`storage.StorageOutage` and become retryable error rows (stage `storage`); the first read that
is answered again ends that state too.

If the monitor cannot be reached (the job ended, a node went), a reader falls back to its own
retries: the gate never blocks a read for longer than `bound_s` and never fails one.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pipeline import storage

OK, DOWN, GAVE_UP = "ok", "down", "gave_up"  # the monitor's states
_OWNED: dict[str, Any] = {}  # the driver's actor handles (a non-detached actor lives while its handle does)


@dataclass(frozen=True)
class OutageHandle:
    """How a process finds the job's monitor (picklable: pass it to tasks and actors)."""

    name: str
    namespace: str | None
    bound_s: float


class Monitor:
    """The shared state (a Ray actor; every method is quick): failures and answers per video,
    the outage's start, the shared backoff and the one probe in flight."""

    def __init__(self, bound_s: float, first_wait_s: float, max_wait_s: float, min_sources: int,
                 window_s: float, probe_timeout_s: float):
        self.bound_s, self.first_wait_s, self.max_wait_s = bound_s, first_wait_s, max(first_wait_s, max_wait_s)
        self.min_sources, self.window_s, self.probe_timeout_s = min_sources, window_s, probe_timeout_s
        self.state, self.kind, self.sources = OK, "", 0
        self.fails: dict[tuple[str, str], tuple[float, int]] = {}  # (source, kind) -> (last failure, failures)
        self.last_ok = 0.0
        self.since = self.wait_s = self.next_try = self.probe_until = 0.0
        self.prober: str | None = None
        self.outages, self.last_outage_s, self.probes = 0, None, 0

    def failed(self, source: str, kind: str, t: float) -> str:
        """A read of `source` failed transiently -> RETRY, WAIT or GIVE_UP (`storage.ReadGate`)."""
        now = time.time()
        if self.state == OK:
            horizon = max(self.last_ok, now - self.window_s)
            self.fails = {k: v for k, v in self.fails.items() if v[0] > horizon}
            if t > horizon:
                self.fails[(source, kind)] = (t, self.fails.get((source, kind), (t, 0))[1] + 1)
            sources = {s for s, k in self.fails if k == kind}
            first_reads_fail = self.last_ok == 0.0 and self.fails.get((source, kind), (0, 0))[1] >= 2
            if len(sources) < self.min_sources and not first_reads_fail:
                return storage.RETRY
            self.state, self.kind, self.sources, self.since = DOWN, kind, len(sources), now
            self.wait_s, self.next_try, self.prober, self.outages = self.first_wait_s, now + self.first_wait_s, None, self.outages + 1
        elif source == self.prober:
            self._probe_failed(now)
        return storage.GIVE_UP if self._gave_up(now) else storage.WAIT

    def ask(self, source: str) -> tuple[str, float]:
        """Before a paused reader's try: ("go", 0), ("wait", seconds) or ("give_up", 0)."""
        now = time.time()
        if self.state == OK:
            return "go", 0.0
        if self._gave_up(now):
            return "give_up", 0.0
        if self.prober is not None and now > self.probe_until:  # the probe never told its outcome
            self._probe_failed(now)
        if self.prober is None and now >= self.next_try:
            self.prober, self.probe_until, self.probes = source, now + self.probe_timeout_s, self.probes + 1
            return "go", 0.0
        left = self.since + self.bound_s - now
        return "wait", max(0.05, min(self.next_try - now if self.prober is None else self.wait_s, left + 0.05, 2.0))

    def answered(self, source: str, t: float) -> None:
        """A read was answered (success, or a failure that is the file's): the store is up."""
        self.last_ok = max(self.last_ok, t)
        if self.state != OK and t > self.since:  # an answer from before the outage tells nothing
            self.state, self.prober, self.last_outage_s = OK, None, time.time() - self.since

    def report(self) -> dict[str, Any]:
        now = time.time()
        if self.state == DOWN:
            self._gave_up(now)
        return {"state": self.state, "kind": self.kind, "sources": self.sources, "bound_s": self.bound_s,
                "seconds": now - self.since if self.state != OK else 0.0, "wait_s": self.wait_s,
                "outages": self.outages, "last_outage_s": self.last_outage_s, "probes": self.probes}

    def _probe_failed(self, now: float) -> None:
        self.prober = None
        self.wait_s = min(self.wait_s * 2, self.max_wait_s)
        self.next_try = now + self.wait_s

    def _gave_up(self, now: float) -> bool:
        if self.state == DOWN and now - self.since > self.bound_s:
            self.state = GAVE_UP
        return self.state == GAVE_UP


def failure_kind(exc: BaseException) -> str:
    """How a read failed, for telling 'the same way across videos': the store's error code, else
    the first OS error number in the cause chain (`OSError EBUSY`), else the innermost type."""
    seen: set[int] = set()
    e: BaseException | None = exc
    last = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        response = getattr(e, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code"):
            return str(response["Error"]["Code"])
        if isinstance(e, OSError) and e.errno in errno.errorcode:
            return f"{type(e).__name__} {errno.errorcode[e.errno]}"
        last, e = e, e.__cause__ or e.__context__
    return type(last).__name__


class SharedGate(storage.ReadGate):
    """The `storage.ReadGate` of a process whose reads belong to a job with a monitor."""

    REPORT_EVERY_S = 5.0  # answers told to the monitor at most this often while nothing failed

    def __init__(self, handle: OutageHandle):
        self.handle = handle
        self._actor: Any = None
        self._gone = False  # the monitor no longer exists: the reads keep their own retries
        self._paused = False  # this process was told the store is down
        self._last_report = 0.0

    def _monitor(self) -> Any:
        import ray

        if self._actor is None and not self._gone:
            try:
                self._actor = ray.get_actor(self.handle.name, namespace=self.handle.namespace)
            except ValueError:  # no such actor: its job ended
                self._gone = True
        return self._actor

    def _call(self, method: str, *args: Any, timeout: float = 10.0) -> Any:
        import ray

        try:
            actor = self._monitor()
            return None if actor is None else ray.get(getattr(actor, method).remote(*args), timeout=timeout)
        except ray.exceptions.RayActorError:
            self._actor = None  # restarting or gone: looked up again next time
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RaySystemError):
            pass
        return None

    def wait(self, source: str) -> bool:
        deadline = time.time() + self.handle.bound_s + 60.0  # whatever the monitor says
        while self._paused and time.time() < deadline:
            answer = self._call("ask", source)
            if answer is None or answer[0] == "go":
                return True
            if answer[0] == "give_up":
                self._paused = False
                return False
            time.sleep(answer[1])
        return True

    def failed(self, source: str, exc: BaseException) -> str:
        verdict = self._call("failed", source, failure_kind(exc), time.time()) or storage.RETRY
        self._paused = verdict == storage.WAIT
        return verdict

    def answered(self, source: str) -> None:
        now = time.time()
        if self._paused:  # the probe came through: tell the monitor now, it ends the outage
            self._call("answered", source, now)
            self._paused, self._last_report = False, now
        elif now - self._last_report >= self.REPORT_EVERY_S:
            self._last_report = now
            with contextlib.suppress(Exception):  # best effort: an answer not told costs nothing
                actor = self._monitor()
                if actor is not None:
                    actor.answered.remote(source, now)


def start(bound_s: float, *, first_wait_s: float = 2.0, max_wait_s: float = 16.0, min_sources: int = 2,
          window_s: float = 60.0, wait: bool = True) -> OutageHandle:
    """Start the job's monitor (call in the driver, Ray initialised); returns its handle. With
    `wait` False it returns at once (the first reads that need it wait for it to come up)."""
    import ray

    if not bound_s > 0:
        raise ValueError(f"storage_outage_s must be > 0, got {bound_s}")
    name = f"storage-outage-{uuid.uuid4().hex[:12]}"
    namespace = ray.get_runtime_context().namespace
    actor = ray.remote(Monitor).options(name=name, namespace=namespace, num_cpus=0, max_restarts=-1).remote(
        float(bound_s), float(first_wait_s), float(max_wait_s), int(min_sources), float(window_s),
        max(60.0, 4 * float(max_wait_s)))
    if wait:
        ray.get(actor.report.remote(), timeout=120)
    _OWNED[name] = actor
    return OutageHandle(name, namespace, float(bound_s))


def stop(handle: OutageHandle) -> None:
    """End the job's monitor (readers still holding its gate fall back to their own retries)."""
    import ray

    actor = _OWNED.pop(handle.name, None)
    if actor is not None:
        with contextlib.suppress(Exception):
            ray.kill(actor)


def install(handle: OutageHandle | None) -> None:
    """Make this process's storage reads use the job's shared gate (None: each read alone);
    idempotent, so call it at the start of every task or actor method that reads."""
    gate = storage.read_gate()
    if handle is None:
        storage.set_read_gate(None)
    elif not (isinstance(gate, SharedGate) and gate.handle == handle):
        storage.set_read_gate(SharedGate(handle))


def report(handle: OutageHandle) -> dict[str, Any] | None:
    """The monitor's state (`state` ok / down / gave_up, `seconds`, `kind`, `sources`, `wait_s`,
    `outages`, `last_outage_s`, `probes`), or None if it cannot be reached."""
    gate = SharedGate(handle)
    gate._actor = _OWNED.get(handle.name)  # the driver's own handle, else looked up by name
    return gate._call("report", timeout=5.0)


def describe(r: dict[str, Any]) -> str | None:
    """The console line of a monitor report while the store is down (else None)."""
    if r["state"] == DOWN:
        return (f"storage unavailable for {r['seconds']:.0f} s (reads of {_videos(r['sources'])} failed: {r['kind']}): "
                f"every reader waits, one read tries again every {r['wait_s']:.0f} s (up to {r['bound_s']:.0f} s, "
                f"--storage-outage-s)")
    if r["state"] == GAVE_UP:
        return (f"storage still unavailable after {r['bound_s']:.0f} s (--storage-outage-s): the videos still open "
                f"become retryable error rows (run the job again later)")
    return None


def _videos(n: int) -> str:
    return "1 video" if n == 1 else f"{n} videos"


def status(handle: OutageHandle) -> str | None:
    """A console line while an outage is on (for the driver's progress loop), else None."""
    r = report(handle)
    return None if r is None else describe(r)


@contextlib.contextmanager
def watch(handle: OutageHandle, prefix: str, emit: Callable[[str], None] | None = None,
          every_s: float = 1.0) -> Iterator[None]:
    """While the block runs, print (`emit`) each change once: the store down, given up, back."""
    emit = emit or (lambda line: print(line, flush=True))
    done = threading.Event()
    seen = {"outages": 0, "state": OK}

    def poll() -> None:
        r = report(handle)
        if r is None:
            return
        new = r["outages"] > seen["outages"]
        if new:
            emit(f"{prefix} storage unavailable (reads of {_videos(r['sources'])} failed: {r['kind']}): every reader "
                 f"waits on one shared backoff and reading goes on by itself when storage answers (waits up to "
                 f"{r['bound_s']:.0f} s, --storage-outage-s)")
        if r["state"] == GAVE_UP and (new or seen["state"] != GAVE_UP):
            emit(f"{prefix} {describe(r)}")
        if r["state"] == OK and (new or seen["state"] != OK):
            emit(f"{prefix} storage answers again after {r['last_outage_s']:.0f} s: reading goes on")
        seen.update(outages=r["outages"], state=r["state"])

    def loop() -> None:
        while not done.wait(every_s):
            poll()

    thread = threading.Thread(target=loop, name="outage-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=10)
        poll()
