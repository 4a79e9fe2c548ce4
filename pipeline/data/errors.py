"""The error table of bad inputs: one row per video that failed, with its stage and reason (no Ray).

Columns `uri, stage, error`. A Ray task writes its failures as one Parquet part file named by a
hash of its content (`write_errors`), so a retried task rewrites the same file; `collect_errors`
merges the parts into one de-duplicated table.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Sequence

import pyarrow as pa

from pipeline import storage

ERROR_SCHEMA = pa.schema([("uri", pa.string()), ("stage", pa.string()), ("error", pa.string())])
MAX_ERROR = 300  # characters of an error text in a row
MAX_URI = 1000  # characters of a uri in an error row
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


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
