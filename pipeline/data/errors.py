"""The error table of bad inputs: one row per video that failed, with its stage and reason (no Ray).

Columns `uri, stage, error`. A Ray task writes its failures as one Parquet part file named by a
hash of its content (`write_errors`), so a retried task rewrites the same file; `collect_errors`
merges the parts into one de-duplicated table.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import pyarrow as pa

from pipeline import storage

ERROR_SCHEMA = pa.schema([("uri", pa.string()), ("stage", pa.string()), ("error", pa.string())])


def error_row(uri: str, stage: str, error: str) -> dict[str, str]:
    """One row of the error table."""
    return {"uri": str(uri), "stage": str(stage), "error": str(error)}


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
