"""The output folder a job may write, checked before Ray starts (no Ray).

    claim_output(out, "_infer.json", {"checkpoint": ..., ...}, overwrite=False, owned=("parts", ...))

A job's output folder carries the job's marker file (its config). A re-run with the same config
resumes; a folder that holds a run of another config, or files the job did not write (another
job's output, anything else), is refused with one line unless `--overwrite`, which removes only
what this job writes (`owned`) and re-claims the folder.
"""

from __future__ import annotations

import posixpath
from typing import Any, Sequence

from pipeline import storage
from pipeline.config import ConfigError


class OutputConflict(ConfigError):
    """The output folder holds another job's output, or a run of another config."""


def _top_names(output: str, limit: int = 3) -> list[str]:
    """Up to `limit` names directly in the folder (empty when it is missing or empty)."""
    fs, path = storage.filesystem(output)
    try:
        entries = fs.ls(path, detail=False) if fs.exists(path) else []
    except (FileNotFoundError, NotADirectoryError):
        return []
    if fs.isfile(path):
        return [posixpath.basename(path)]
    return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)[:limit]


def claim_output(output: str, marker: str, config: dict[str, Any], *, overwrite: bool,
                 owned: Sequence[str], job: str) -> None:
    """Refuse (OutputConflict) to write into `output` when it holds another config's run or
    files this job did not write, unless `overwrite`; then write the marker (`config`)."""
    uri = storage.join(output, marker)
    if storage.exists(uri):
        old = storage.read_json(uri)
        if old == config:
            return
        if not overwrite:
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise OutputConflict(f"{output} holds output of another {job} config (differs in "
                                 f"{', '.join(changed)}); use --overwrite or a new --output")
    elif (names := _top_names(output)) and not overwrite:
        raise OutputConflict(f"{output} holds files {job} did not write ({', '.join(names)}, ...); "
                             "use --overwrite (removes only this job's outputs) or a new --output")
    if overwrite:
        for sub in owned:
            storage.remove(storage.join(output, sub), recursive=True)
    storage.write_json(uri, config)

