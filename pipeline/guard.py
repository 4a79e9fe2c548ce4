"""The output folder a job may write, checked before Ray starts (no Ray).

    claim_output(out, "_infer.json", {"checkpoint": ..., ...}, overwrite=False, owned=("parts", ...))

A job's output folder carries the job's marker file (its config). A re-run with the same config
resumes; a folder that holds a run of another config, or files the job did not write (another
job's output, anything else), is refused with one line unless `--overwrite`, which removes only
what this job writes (`owned`) and re-claims the folder.

`OwnFiles` does the same for a local folder several jobs write into (the demo's): its marker
lists every file the job wrote, so a fresh run removes exactly those.
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import Any, Mapping, Sequence

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


_CONTENT = {"manifest_rows": "the manifest's rows", "manifest_sha1": "the manifest's rows",
            "labels": "the labels"}  # what the user changed when these derived keys differ
_FLAG_OF = {"train_short_side": "short_side", "memory": "memory_mb"}  # DecodeConfig names jobs spell otherwise


def differences(old: dict[str, Any], new: dict[str, Any], flags: Mapping[str, str] | None = None) -> list[str]:
    """What differs between two marker configs, as the user set it: a flag per differing leaf
    (`{"data": {"num_frames": 8}}` -> `--num-frames (8 there, 16 now)`; sections are the job's
    grouping, its flags are the leaves' names, or `flags[leaf]`), or the manifest's content."""
    flags = flags or {}
    out: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), k)
        elif a != b:
            if key in _CONTENT:
                text = _CONTENT[key]
            else:
                text = flags.get(key) or "--" + _FLAG_OF.get(key, key).replace("_", "-")
                if all(isinstance(v, (int, float, str, type(None))) and len(repr(v)) <= 40 for v in (a, b)):
                    text += f" ({a!r} there, {b!r} now)"
            if not any(t.split(" (")[0] == text.split(" (")[0] for t in out):
                out.append(text)

    walk(old, new, "")
    return out


def claim_output(output: str, marker: str, config: dict[str, Any], *, overwrite: bool,
                 owned: Sequence[str], job: str, flags: Mapping[str, str] | None = None) -> None:
    """Refuse (OutputConflict) to write into `output` when it holds another config's run or
    files this job did not write, unless `overwrite`; then write the marker (`config`). `flags`
    names the flags of the marker's keys that are not `--<key>` (see `differences`)."""
    uri = storage.join(output, marker)
    if storage.exists(uri):
        old = storage.read_json(uri)
        if old == config:
            return
        if not overwrite:
            raise OutputConflict(f"{output} holds output of another {job} config (differs in "
                                 f"{', '.join(differences(old, config, flags))}); use --overwrite or a new --output")
    elif (names := _top_names(output)) and not overwrite:
        raise OutputConflict(f"{output} holds files {job} did not write ({', '.join(names)}, ...); "
                             "use --overwrite (removes only this job's outputs) or a new --output")
    if overwrite:
        for sub in owned:
            storage.remove(storage.join(output, sub), recursive=True)
    storage.write_json(uri, config)



class OwnFiles:
    """The files a job wrote into a local folder, listed in the folder's marker file: a fresh run
    removes exactly those, and never a file of the user's.

        own = OwnFiles(folder, "_demo.json", job="jobs.demo", overwrite=False)  # OutputConflict?
        own.claim()    # the previous run's files go; the marker is written
        ...            # the job writes
        own.record()   # the marker lists every file written since claim (after each step, at the end)

    Files in the folder that no marker lists (the user's, another job's) are refused with one line
    naming them unless `overwrite`; with it they stay where they are, untouched, and unlisted.
    """

    def __init__(self, folder: str | Path, marker: str, *, job: str, overwrite: bool) -> None:
        self.folder, self.marker, self.job = Path(folder), marker, job
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputConflict(f"{self.folder} is a file, not a folder; use a new --output")
        self.previous = self._listed()
        present = _local_files(self.folder)
        self.foreign = present - self.previous - {marker}
        if self.foreign and not overwrite:
            names = sorted(self.foreign)
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            raise OutputConflict(f"{self.folder} holds files {job} did not write ({shown}); use --overwrite "
                                 f"(removes only the files {job} wrote, keeps these) or a new --output")

    def _listed(self) -> set[str]:
        path = self.folder / self.marker
        if not path.is_file():
            return set()
        try:
            data = json.loads(path.read_text())
            files = data["files"] if data.get("job") == self.job else []
        except (ValueError, KeyError, TypeError, AttributeError):
            raise OutputConflict(f"{path}: not a marker of {self.job}; use a new --output") from None
        return {f for f in files if isinstance(f, str) and not Path(f).is_absolute() and ".." not in Path(f).parts}

    def claim(self) -> None:
        """Remove the files the previous run listed (then their folders, once empty); write the marker."""
        parents: set[Path] = set()
        for rel in sorted(self.previous):
            path = self.folder / rel
            if path.is_file() or path.is_symlink():
                path.unlink()
            parents.update(p for p in path.parents if self.folder in p.parents)
        for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self.previous = set()
        self.record()

    def record(self) -> None:
        """The marker lists every file under the folder but the foreign ones found at the start."""
        self.folder.mkdir(parents=True, exist_ok=True)
        files = sorted(_local_files(self.folder) - self.foreign - {self.marker})
        tmp = self.folder / f".{self.marker}.tmp"
        tmp.write_text(json.dumps({"job": self.job, "files": files}, indent=1))
        os.replace(tmp, self.folder / self.marker)


def _local_files(folder: Path) -> set[str]:
    """Paths (relative, '/'-separated) of every file and link under `folder`."""
    if not folder.is_dir():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
