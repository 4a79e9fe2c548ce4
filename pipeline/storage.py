"""URIs -> filesystems, and small atomic read/write helpers (no ray).

A URI is `s3://bucket/key`, `gs://bucket/key`, `file:///abs/path` or a plain local path.
Every helper takes and returns URI strings; the filesystem behind one comes from
`fsspec.core.url_to_fs`.

Credentials come from the standard chain of each backend (for S3: `AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY` / `AWS_PROFILE`, `~/.aws/*`, instance roles); nothing here reads or
logs them. S3-compatible stores (MinIO, Ceph, a loopback test server) are reached through the
standard `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` variables: botocore (hence s3fs) honours
them natively; we also pass the value explicitly so that fsspec's instance cache is keyed on
it and `pyarrow.fs.S3FileSystem` (which does not read the variable) gets the same endpoint.

Atomicity: local writes go to a hidden temporary name in the same folder and are renamed into
place (`os.replace`); object-store writes are one PUT, which readers see whole or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import posixpath
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, TypeVar
from urllib.parse import urlparse

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

T = TypeVar("T")

__all__ = [
    "endpoint_url", "filesystem", "arrow_filesystem", "is_local", "local_path", "join",
    "safe_relpath", "join_inside",
    "open_uri", "exists", "list_files", "makedirs", "remove", "read_bytes",
    "write_bytes_atomic", "read_json", "write_json", "read_parquet", "write_parquet_atomic",
    "is_transient", "with_retries", "StorageOutage", "ReadGate", "set_read_gate", "read_gate",
]


def endpoint_url() -> str | None:
    """The S3-compatible endpoint from the environment (`AWS_ENDPOINT_URL_S3` wins), or None."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _protocol(uri: str) -> str:
    scheme = urlparse(uri).scheme if "://" in uri else ""
    return scheme or "file"


def is_local(uri: str) -> bool:
    """True for plain paths and `file://` URIs."""
    return _protocol(uri) in ("file", "local")


def local_path(uri: str) -> str:
    """The absolute local path of a local URI (`file:///a/b` or `a/b`)."""
    if not is_local(uri):
        raise ValueError(f"not a local path: {uri}")
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return os.path.abspath(os.path.expanduser(path))


def _storage_options(uri: str) -> dict[str, Any]:
    if _protocol(uri) in ("s3", "s3a"):
        opts: dict[str, Any] = {"use_listings_cache": False}
        if (ep := endpoint_url()):
            opts["endpoint_url"] = ep
        return opts
    return {}


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for a URI; local paths become absolute."""
    if is_local(uri):
        return fsspec.filesystem("file"), local_path(uri)
    return url_to_fs(uri, **_storage_options(uri))


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path) for Ray Data's `read_parquet` / `write_parquet(filesystem=)`.

    S3 uses `pyarrow.fs.S3FileSystem` with the endpoint from the environment; other remote
    schemes are wrapped from fsspec.
    """
    proto = _protocol(uri)
    if is_local(uri):
        return pafs.LocalFileSystem(), local_path(uri)
    if proto in ("s3", "s3a"):
        kwargs: dict[str, Any] = {}
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        if (ep := endpoint_url()):
            parsed = urlparse(ep)
            kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
            kwargs["scheme"] = parsed.scheme or "https"
        return pafs.S3FileSystem(**kwargs), uri.split("://", 1)[1]
    fs, path = filesystem(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI, keeping its scheme (`join("s3://b/x", "y")` -> `s3://b/x/y`)."""
    if is_local(uri) and not uri.startswith("file://"):
        return os.path.join(uri, *parts)
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://{posixpath.join(rest, *parts)}"


_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
MAX_SEGMENT = 100  # characters of one sanitised path segment (before its hash suffix)


def safe_relpath(name: str, suffix: str = "") -> str:
    """A relative path made from an untrusted `name` (a video id): `/` keeps folders, every
    segment is cut to [A-Za-z0-9._-] and at most MAX_SEGMENT characters, empty, `.` and `..`
    segments are dropped and no segment starts with a dot. When that changed `name`, 8 hex of
    its sha1 are appended, so two different names never share a path. `suffix` (".png") ends it."""
    segments = []
    for seg in name.split("/"):
        clean = "".join(c if c in _SAFE_CHARS else "_" for c in seg)[:MAX_SEGMENT].lstrip(".")
        if clean:
            segments.append(clean)
    rel = "/".join(segments)
    if rel != name or not rel:
        rel = (rel or "_") + "-" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return rel + suffix


def join_inside(root: str, rel: str) -> str:
    """`join(root, rel)`, proven to lie inside `root` (raises ValueError when `rel` is absolute or
    climbs out with `..`): the guard for every output name derived from data."""
    uri = join(root, rel)
    if is_local(root):
        base, path = local_path(root), os.path.normpath(local_path(uri))
        if os.path.isabs(rel) or os.path.commonpath([base, path]) != base or path == base:
            raise ValueError(f"{rel!r} would leave the output folder {root}")
        return uri
    base = root.split("://", 1)[1].rstrip("/")
    path = posixpath.normpath(uri.split("://", 1)[1])
    if rel.startswith("/") or not path.startswith(base + "/") or path != uri.split("://", 1)[1]:
        raise ValueError(f"{rel!r} would leave the output folder {root}")
    return uri


def _unparse(uri: str, path: str) -> str:
    """Turn a filesystem path back into a URI of the same kind as `uri`."""
    if is_local(uri):
        return path
    return f"{_protocol(uri)}://{path}"


def open_uri(uri: str, mode: str = "rb", **kwargs: Any):
    """Open a URI as a file object (use as a context manager)."""
    fs, path = filesystem(uri)
    if "w" in mode and is_local(uri):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return fs.open(path, mode, **kwargs)


@contextlib.contextmanager
def open_for_reading(uri: str, **kwargs: Any) -> Iterator[Any]:
    """A local file as its path (so native readers such as PyAV do their own I/O); a remote one
    as an open, seekable file object (`kwargs`, e.g. `block_size`, go to the filesystem).
    Raises FileNotFoundError for a missing remote object."""
    if is_local(uri):
        yield local_path(uri)
        return
    with open_uri(uri, "rb", **kwargs) as f:
        yield f


def exists(uri: str) -> bool:
    """Whether a file or folder exists at the URI."""
    fs, path = filesystem(uri)
    return fs.exists(path)


def list_files(uri: str, suffixes: Iterable[str] | None = None) -> list[str]:
    """All files under a folder URI (recursive), sorted, as URIs; optionally only these suffixes.

    Suffixes are compared case-insensitively (`(".mp4", ".webm")`). A missing folder gives [].
    """
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    found = fs.find(path)
    sfx = tuple(s.lower() for s in suffixes) if suffixes else None
    out = [p for p in found if sfx is None or p.lower().endswith(sfx)]
    return sorted(_unparse(uri, p) for p in out)


def makedirs(uri: str) -> None:
    """Create a folder (no-op on object stores, where folders are implicit)."""
    if is_local(uri):
        os.makedirs(local_path(uri), exist_ok=True)


def remove(uri: str, recursive: bool = False) -> None:
    """Delete a file (or a folder with recursive=True); missing is not an error."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def read_bytes(uri: str) -> bytes:
    """The whole content of a URI."""
    fs, path = filesystem(uri)
    return fs.cat_file(path)


@contextlib.contextmanager
def open_atomic(uri: str) -> Iterator[Any]:
    """A writable binary file that appears at `uri` whole or not at all (streamed, any size).

    Local: a hidden temporary file in the same folder, fsynced and renamed into place. Object
    stores: one upload that becomes visible only when it completes (a single or multipart PUT).
    """
    if is_local(uri):
        path = local_path(uri)
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        with open_uri(uri, "wb") as f:
            yield f


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write bytes so that readers see either nothing / the old file, or all of `data`."""
    if is_local(uri):
        with open_atomic(uri) as f:
            f.write(data)
    else:
        fs, path = filesystem(uri)
        fs.pipe_file(path, data)  # one PUT: atomic on S3 / GCS


def read_json(uri: str) -> Any:
    """Parse a JSON file."""
    return json.loads(read_bytes(uri).decode("utf-8"))


def write_json(uri: str, obj: Any) -> None:
    """Write an object as indented JSON, atomically."""
    write_bytes_atomic(uri, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file into an Arrow table."""
    with open_uri(uri, "rb") as f:
        return pq.read_table(f, columns=columns)


def write_parquet_atomic(uri: str, table: pa.Table, **kwargs: Any) -> None:
    """Write an Arrow table as one Parquet file, atomically (serialised in memory, then placed)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)
    write_bytes_atomic(uri, buf.getvalue())


# ----------------------------------------------------------------------------- transient failures

_TRANSIENT_ERRNOS = {errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED,
                     errno.ECONNABORTED, errno.EPIPE, errno.ENETUNREACH, errno.EHOSTUNREACH}
_TRANSIENT_CODES = ("ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException", "InternalError",
                    "RequestTimeout", "RequestTimeTooSkewed", "ExpiredToken", "TokenRefreshRequired",
                    "RequestLimitExceeded", "503", "500", "502", "504")
_TRANSIENT_TYPES = ("EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
                    "ConnectTimeoutError", "ServerDisconnectedError", "ClientConnectionError",
                    "ClientPayloadError", "CredentialRetrievalError", "NoCredentialsError")


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is the store's, not the file's: 5xx, throttling, resets, timeouts,
    expired or missing credentials (anywhere in the exception's cause chain). Such a failure is
    retried, and when it persists reported as retryable, never as a bad video."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (TimeoutError, ConnectionError)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
        if type(e).__name__ in _TRANSIENT_TYPES:
            return True
        response = getattr(e, "response", None)  # botocore ClientError
        if isinstance(response, dict) and str(response.get("Error", {}).get("Code", "")) in _TRANSIENT_CODES:
            return True
        e = e.__cause__ or e.__context__
    return False


class StorageOutage(ConnectionError):
    """The whole store has been down for longer than the job's outage bound: the read gives up
    (transient: its video becomes a retryable error row)."""


RETRY, WAIT, GIVE_UP = "retry", "wait", "give_up"  # a gate's verdicts on a transient failure
OUTAGE_TEXT = "storage unavailable: down across videos for longer than the job's bound (--storage-outage-s)"


class ReadGate:
    """What the reads of one process share about the store's health (`with_retries` asks it).

    This base gate knows nothing, so every read keeps only its own retries. A job that runs
    readers on many processes installs one that is shared by them all (`pipeline.outage`): when
    reads fail transiently across videos, the store is down, and every reader pauses on one
    shared backoff instead of spending its own tries. Methods:

        wait(source)          before each try: block while the store is down (bounded); False
                              once the outage outlasted the job's bound (give up)
        failed(source, exc)   after a transient failure: RETRY (an isolated failure: the read's
                              own retries), WAIT (the store is down: wait, then try again without
                              spending a try) or GIVE_UP (down past the bound)
        answered(source)      the store answered (a success, or a failure that is the file's)
    """

    def wait(self, source: str) -> bool:
        return True

    def failed(self, source: str, exc: BaseException) -> str:
        return RETRY

    def answered(self, source: str) -> None:
        return None


_GATE: list[ReadGate] = [ReadGate()]


def set_read_gate(gate: ReadGate | None) -> ReadGate:
    """Make `gate` (None: the base gate) the one every `with_retries` of this process asks;
    returns the one it replaces."""
    old, _GATE[0] = _GATE[0], gate or ReadGate()
    return old


def read_gate() -> ReadGate:
    """The gate `with_retries` asks in this process."""
    return _GATE[0]


def with_retries(fn: Callable[[], T], *, attempts: int = 3, backoff_s: float = 2.0, source: str = "") -> T:
    """`fn()` (one whole read of `source`), tried up to `attempts` times while it fails
    transiently (`is_transient`), waiting `backoff_s`, then twice that, ... between tries; the
    last failure propagates. The process's `read_gate()` is told of every outcome: while it
    says the whole store is down, the read waits on it and its tries are not spent; past the
    gate's bound it raises `StorageOutage`, or the last transient failure."""
    gate = read_gate()
    tries = 0
    while True:
        if not gate.wait(source):
            raise StorageOutage(OUTAGE_TEXT)
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised unless transient and tries remain
            if not is_transient(e):
                gate.answered(source)  # the store answered: the failure is the file's
                raise
            verdict = gate.failed(source, e)
            if verdict == WAIT:
                continue  # the shared backoff decides when to try again
            if verdict == GIVE_UP:
                raise StorageOutage(OUTAGE_TEXT) from e
            tries += 1
            if tries >= attempts:
                raise
            time.sleep(backoff_s * 2 ** (tries - 1))
        else:
            gate.answered(source)
            return result
