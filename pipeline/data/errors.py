"""The error table of bad inputs and the one vocabulary of error stages (no Ray).

Columns `uri, stage, error`. A Ray task writes its failures as one Parquet part file named by a
hash of its content (`write_errors`), so a retried task rewrites the same file; `collect_errors`
merges the parts into one de-duplicated table.

Stages (the `stage` of every error row and of `DecodeError`, in every job):

    manifest  the manifest row itself is unusable (no path, unknown label, duplicate id)
    open      the file is missing, empty or not a container PyAV can read
    stream    the container holds no video stream
    probe     the stream's facts are refused (frame size cap, still image, broken time base)
    seek      a frame cannot be reached
    sample    the row's segment holds no frames to sample clips from
    index     frame indices outside the video
    decode    frames do not decode
    encode    the encoder failed (jobs.transcode)
    storage   the store failed transiently (5xx, throttling, resets, timeouts): RETRYABLE,
              never a verdict on the video; a re-run tries it again
    model     the model could not score the clips (inference)
    worker    the process decoding the video died (inference)

`is_retryable(stage)` tells the one retryable stage. `read_or_error` is the one way a job reads a
video: `storage.with_retries` for transient failures (and a storage outage), then `classify`
turns what still failed into (stage, message). `error_kinds` sums error rows up for the console.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any, Callable, Iterable, Sequence, TypeVar

import pyarrow as pa

from pipeline import storage
from pipeline.data.seek import DecodeError

T = TypeVar("T")

MANIFEST, OPEN, STREAM, PROBE, SEEK, SAMPLE, INDEX, DECODE, ENCODE = (
    "manifest", "open", "stream", "probe", "seek", "sample", "index", "decode", "encode")
STORAGE, MODEL, WORKER = "storage", "model", "worker"
STAGES = (MANIFEST, OPEN, STREAM, PROBE, SEEK, SAMPLE, INDEX, DECODE, ENCODE, STORAGE, MODEL, WORKER)
RETRYABLE = frozenset({STORAGE})

ERROR_SCHEMA = pa.schema([("uri", pa.string()), ("stage", pa.string()), ("error", pa.string())])
MAX_ERROR = 300  # characters of an error text in a row
MAX_URI = 1000  # characters of a uri in an error row
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


def is_retryable(stage: str | None) -> bool:
    """Whether an error row of this stage is the store's failure (a re-run tries it again)."""
    return stage in RETRYABLE


def error_text(error: BaseException | str, limit: int = MAX_ERROR) -> str:
    """A short, plain, one-line error text: the root cause of an exception (Ray's task errors
    hold it in `.cause`), the last line of a traceback, no terminal escapes, at most `limit`."""
    if isinstance(error, BaseException):
        seen = set()
        while getattr(error, "cause", None) is not None and id(error) not in seen:
            seen.add(id(error))
            error = error.cause
        error = f"{type(error).__name__}: {error}"
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    text = " ".join(lines[-1].split()) if lines else ""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def error_row(uri: str, stage: str, error: BaseException | str) -> dict[str, str]:
    """One row of the error table (the error as `error_text`)."""
    uri = str(uri)
    return {"uri": uri if len(uri) <= MAX_URI else uri[:MAX_URI - 3] + "...", "stage": str(stage), "error": error_text(error)}


def classify(exc: BaseException, *, attempts: int, default: str = DECODE) -> tuple[str, str]:
    """(stage, message) of a read that failed for good: `storage` for a transient failure (it
    persisted through `attempts` tries, or the store was down past the job's outage bound),
    the `DecodeError`'s own stage, `open` for a missing file or another OS error, else `default`."""
    if storage.is_transient(exc):
        if isinstance(exc, storage.StorageOutage):
            return STORAGE, str(exc)
        return STORAGE, f"storage unavailable after {attempts} tries: {type(exc).__name__}: {exc}"
    if isinstance(exc, DecodeError):
        return exc.stage, exc.message
    if isinstance(exc, FileNotFoundError):
        return OPEN, "file not found"
    if isinstance(exc, OSError):
        return OPEN, f"{type(exc).__name__}: {exc}"
    return default, f"{type(exc).__name__}: {exc}"


def read_or_error(uri: str, attempt: Callable[[], T], *, attempts: int, backoff_s: float,
                  default: str = DECODE) -> tuple[T | None, dict[str, str] | None]:
    """`attempt()` (one whole read of the video at `uri`) -> (result, None), or (None, error row);
    never raises for one video. Transient storage failures are retried (`storage.with_retries`:
    `attempts` tries `backoff_s` apart, doubling, and a shared pause while the whole store is
    down); what still fails is classified by `classify`."""
    try:
        return storage.with_retries(attempt, attempts=attempts, backoff_s=backoff_s, source=uri), None
    except Exception as e:  # noqa: BLE001 - one bad video never fails the job
        stage, message = classify(e, attempts=attempts, default=default)
        return None, error_row(uri, stage, message)


def errors_table(errors: Iterable[dict[str, str]]) -> pa.Table:
    """Error rows -> an Arrow table (uri, stage, error), sorted and de-duplicated."""
    uniq = sorted({(e["uri"], e["stage"], e["error"]) for e in errors})
    cols = list(zip(*uniq)) if uniq else [(), (), ()]
    return pa.table({"uri": list(cols[0]), "stage": list(cols[1]), "error": list(cols[2])},
                    schema=ERROR_SCHEMA)


def write_errors(error_uri: str, errors: Sequence[dict[str, str]]) -> str | None:
    """Write error rows as one part file under `error_uri` (name = content hash); None if empty."""
    if not errors:
        return None
    table = errors_table(errors)
    digest = hashlib.sha1(repr(table.to_pydict()).encode()).hexdigest()[:16]
    uri = storage.join(error_uri, f"part-{digest}.parquet")
    storage.write_parquet_atomic(uri, table)
    return uri


def collect_errors(error_uri: str) -> pa.Table:
    """Merge every error part file under `error_uri` into one de-duplicated table."""
    rows: list[dict[str, str]] = []
    for part in storage.list_files(error_uri, (".parquet",)):
        rows.extend(storage.read_parquet(part).to_pylist())
    return errors_table(rows)


def reason_kind(error: str) -> str:
    """The kind of an error text: what comes before its first `: ` outside brackets
    (`not a video file (PyAV could not read a container): Invalid data...` -> the part before
    the colon), so that rows that differ only in their details count as one kind."""
    depth = 0
    for i, c in enumerate(error):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        elif c == ":" and depth == 0 and error[i + 1:i + 2] in (" ", ""):
            return error[:i].strip()
    return error.strip()


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def error_kinds(rows: Iterable[dict[str, Any]], limit: int = 10) -> list[str]:
    """Console lines summing up error rows: one per (stage, reason kind), most frequent first,
    with its count and one example, e.g. `3 x open: not a video file (PyAV could not read a
    container) e.g. s3://b/x.mp4`; at most `limit` lines (the last says how many kinds are left)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        kind = reason_kind(str(r.get("error") or ""))
        groups.setdefault((str(r.get("stage")), _NUMBER.sub("N", kind)), []).append({**r, "kind": kind})
    order = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    lines = []
    for (stage, shape), members in order:
        kinds = Counter(m["kind"] for m in members)
        kind = members[0]["kind"] if len(kinds) == 1 else shape  # differing numbers read as N
        lines.append(f"{len(members)} x {stage}: {kind} e.g. {members[0].get('uri')}")
    if len(lines) > limit:
        rest = len(lines) - (limit - 1)
        lines = lines[:limit - 1] + [f"... and {rest} more kinds of error (all in errors.parquet)"]
    return lines
