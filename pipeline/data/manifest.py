"""Manifests -> rows of videos with integer labels (no ray).

Sources (all through `pipeline.storage`, so local paths, `file://`, `s3://`, `gs://` alike):

- a table: CSV / TSV (with a header), JSONL, or Parquet with columns `path,label` and optionally
  `video_id,start_sec,end_sec`; any other column is passed through unchanged. Relative paths are
  resolved against the manifest's folder. A table without a `label` column gives `label = -1`
  (inference manifests).
- a folder-per-class layout: `root/<class>/**/*.mp4`.
- HowTo100M task CSVs: `video_id,task_id` with or without a header row (the released files
  have none; extra columns are ignored when there is a header), turned into paths by a template
  such as `s3://bucket/howto100m/{video_id}.mp4`.

Every row comes out as
`{"path": uri, "label": int, "label_name": str | None, "video_id": str,
  "start_sec": float | None, "end_sec": float | None, **extra}`.

Labels: `LabelMap` maps names <-> contiguous ids and is stored as `labels.json`. Ids are
deterministic: from the labels file when one is given (or lies beside the manifest as
`labels.json`), else the sorted distinct names (numerically when every name is an integer).

Bad rows (missing path, missing / unknown label, bad numbers, unparsable lines) never raise:
they come back in `Manifest.errors` as `{"uri", "stage": "manifest", "error"}`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from pipeline import storage

# the one list of video file suffixes (folder manifests, jobs.infer --videos FOLDER)
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg",
                  ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
LABELS_FILE = "labels.json"
_CORE = ("path", "label", "video_id", "start_sec", "end_sec")


# ---------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelMap:
    """Class names <-> contiguous integer ids (`names[i]` has id `i`)."""

    names: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        if len(set(names)) != len(names):
            raise ValueError("duplicate class names in label map")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    @classmethod
    def from_names(cls, names: Iterable[Any]) -> "LabelMap":
        """Deterministic ids from a set of names: sorted, numerically if all are integers."""
        distinct = {str(n) for n in names}
        if distinct and all(_is_int(n) for n in distinct):
            return cls(tuple(sorted(distinct, key=lambda n: (int(n), n))))
        return cls(tuple(sorted(distinct)))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return str(name) in self._index

    def id(self, name: Any) -> int:
        """The id of a class name (KeyError when unknown)."""
        try:
            return self._index[str(name)]
        except KeyError:
            raise KeyError(f"unknown label {name!r} (known: {len(self.names)} classes)") from None

    def name(self, label_id: int) -> str:
        """The name of a class id."""
        return self.names[label_id]

    def to_json(self) -> dict[str, Any]:
        """The `labels.json` content: `{"names": [...], "name_to_id": {...}}`."""
        return {"names": list(self.names), "name_to_id": {n: i for i, n in enumerate(self.names)}}

    @classmethod
    def from_json(cls, obj: Any) -> "LabelMap":
        """Parse `labels.json`: ours, a plain list of names, or a `{name: id}` mapping."""
        if isinstance(obj, list):
            return cls(tuple(str(n) for n in obj))
        if isinstance(obj, Mapping):
            if "names" in obj:
                return cls(tuple(str(n) for n in obj["names"]))
            mapping = obj.get("name_to_id", obj)
            if all(isinstance(v, int) for v in mapping.values()):
                ordered = sorted(mapping.items(), key=lambda kv: kv[1])
                if [i for _, i in ordered] != list(range(len(ordered))):
                    raise ValueError("label ids in labels file are not 0..N-1")
                return cls(tuple(str(n) for n, _ in ordered))
        raise ValueError("unrecognised labels file: expected a list of names or {name: id}")


def read_labels(uri: str) -> LabelMap:
    """Read a `labels.json`."""
    return LabelMap.from_json(storage.read_json(uri))


def write_labels(uri: str, labels: LabelMap) -> None:
    """Write a `labels.json` atomically."""
    storage.write_json(uri, labels.to_json())


# ---------------------------------------------------------------------------- manifests


@dataclass
class Manifest:
    """Parsed manifest: good rows, error rows (uri, stage, error), and the label map used."""

    rows: list[dict[str, Any]]
    errors: list[dict[str, str]] = field(default_factory=list)
    labels: LabelMap = field(default_factory=lambda: LabelMap(()))


def read_manifest(uri: str, **kwargs: Any) -> list[dict[str, Any]]:
    """The good rows of a manifest (see `load_manifest`, which also returns the bad ones)."""
    return load_manifest(uri, **kwargs).rows


def load_manifest(
    uri: str,
    *,
    labels: LabelMap | str | None = None,
    howto100m_template: str | None = None,
) -> Manifest:
    """Read any supported manifest (table file, class folder, or HowTo100M CSV with a template).

    `labels`: a `LabelMap`, the URI of a labels file, or None (use `labels.json` beside the
    manifest if there is one, else derive sorted ids from the names in the manifest).
    """
    label_map = _resolve_labels(uri, labels)
    if howto100m_template is not None:
        raw, errors = _howto100m_records(uri, howto100m_template)
    elif uri.lower().rstrip("/").endswith(TABLE_SUFFIXES):
        raw, errors = _table_records(uri)
    else:
        raw, errors = _folder_records(uri), []
    return _finish(raw, errors, label_map, base=_parent(uri))


def load_folder(root: str, *, labels: LabelMap | str | None = None) -> Manifest:
    """Folder-per-class layout `root/<class>/**/*.mp4` (explicit form of `load_manifest`)."""
    label_map = _resolve_labels(root, labels)
    return _finish(_folder_records(root), [], label_map, base=root)


def load_howto100m(uri: str, template: str, *, labels: LabelMap | str | None = None) -> Manifest:
    """HowTo100M task CSV (`video_id,task_id`, header optional) with a path template."""
    return load_manifest(uri, labels=labels, howto100m_template=template)


# ---------------------------------------------------------------------------- readers


def _parent(uri: str) -> str:
    u = uri.rstrip("/")
    if storage.is_local(u) and not u.startswith("file://"):
        import os

        return os.path.dirname(os.path.abspath(u))
    scheme, rest = u.split("://", 1)
    return f"{scheme}://{posixpath.dirname(rest)}"


def _resolve_labels(uri: str, labels: LabelMap | str | None) -> LabelMap | None:
    if isinstance(labels, LabelMap):
        return labels
    if isinstance(labels, str):
        return read_labels(labels)
    if uri.lower().rstrip("/").endswith(TABLE_SUFFIXES):
        beside = storage.join(_parent(uri), LABELS_FILE)
        if storage.exists(beside):
            return read_labels(beside)
    return None


def _where(uri: str, line: int) -> str:
    return f"{uri}#L{line}"


def _table_records(uri: str) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, str]]]:
    """(records as (where, dict), errors) from CSV / TSV / JSONL / Parquet."""
    low = uri.lower()
    errors: list[dict[str, str]] = []
    if low.endswith(".parquet"):
        table = storage.read_parquet(uri)
        return [(_where(uri, i + 1), r) for i, r in enumerate(table.to_pylist())], errors
    text = storage.read_bytes(uri).decode("utf-8-sig")
    if low.endswith((".jsonl", ".json")):
        out = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                errors.append(_error(_where(uri, i), f"bad JSON line: {e}"))
                continue
            out.append((_where(uri, i), rec))
        return out, errors
    delim = "\t" if low.endswith(".tsv") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delim)
    out = []
    for line, rec in _csv_rows(reader, uri, errors):
        if None in rec:  # more cells than header columns
            errors.append(_error(_where(uri, line), "row has more cells than the header"))
            continue
        out.append((_where(uri, line), {k.strip(): v for k, v in rec.items() if k is not None}))
    return out, errors


def _csv_rows(reader: Any, uri: str, errors: list[dict[str, str]]) -> Iterable[tuple[int, Any]]:
    """(line, record) of a csv reader; a record the csv module refuses (a field over its size
    limit, a stray NUL) becomes one error row and reading goes on with the next line."""
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            line = getattr(reader, "reader", reader).line_num  # a DictReader's own count lags on errors
            errors.append(_error(_where(uri, line), f"unreadable CSV row: {e}"))
            continue
        yield reader.line_num, rec


def _howto100m_records(uri: str, template: str) -> tuple[list, list[dict[str, str]]]:
    """HowTo100M CSV rows -> records with a path from the template and the task id as label."""
    text = storage.read_bytes(uri).decode("utf-8-sig")
    errors: list[dict[str, str]] = []
    rows = [cells for _, cells in _csv_rows(csv.reader(io.StringIO(text)), uri, errors)]
    start, vid_col, task_col = 0, 0, 1
    if rows and "video_id" in [c.strip() for c in rows[0]]:
        header = [c.strip() for c in rows[0]]
        task_name = "task_id" if "task_id" in header else "label"
        if task_name not in header:
            raise ValueError(f"{uri}: HowTo100M header needs video_id and task_id, got {header}")
        start, vid_col, task_col = 1, header.index("video_id"), header.index(task_name)
    out = []
    for i, cells in enumerate(rows[start:], start=start + 1):
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) <= max(vid_col, task_col):
            errors.append(_error(_where(uri, i), f"expected video_id,task_id, got {cells}"))
            continue
        vid, task = cells[vid_col].strip(), cells[task_col].strip()
        if not vid:
            errors.append(_error(_where(uri, i), "missing video_id"))
            continue
        path = template.format(video_id=vid, task_id=task)
        out.append((_where(uri, i), {"path": path, "label": task, "video_id": vid}))
    return out, errors


def _folder_records(root: str) -> list[tuple[str, dict[str, Any]]]:
    """`root/<class>/**/*.mp4` -> records labelled by the first folder under root."""
    root = root.rstrip("/")
    fs, path = storage.filesystem(root)
    if not fs.exists(path):
        raise FileNotFoundError(f"manifest not found: {root}")
    if fs.isfile(path):
        raise ValueError(f"{root}: unknown manifest format (expected one of {', '.join(TABLE_SUFFIXES)}, "
                         "a class folder, or a HowTo100M CSV with a template)")
    base = storage.filesystem(root)[1].rstrip("/")
    out = []
    for uri in storage.list_files(root, VIDEO_SUFFIXES):
        rel = storage.filesystem(uri)[1][len(base):].lstrip("/")
        parts = rel.split("/")
        if len(parts) < 2:
            continue  # a video directly under root has no class folder
        out.append((uri, {"path": uri, "label": parts[0]}))
    return out


# ---------------------------------------------------------------------------- normalisation


def _error(uri: str, message: str) -> dict[str, str]:
    return {"uri": uri, "stage": "manifest", "error": message}


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def _seconds(value: Any, name: str) -> float | None:
    if _blank(value):
        return None
    try:
        sec = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is not a number: {value!r}") from None
    if not math.isfinite(sec) or sec < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return sec


def _resolve_path(path: str, base: str) -> str:
    if "://" in path or path.startswith("/"):
        return path
    return storage.join(base, path)


def _label_name(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _parse(where: str, rec: dict[str, Any], base: str, has_label: bool) -> dict[str, Any]:
    """One record -> a row with a string label name (ValueError with a message when bad)."""
    if _blank(rec.get("path")):
        raise ValueError("missing path" if "path" in rec else f"missing path (columns found: {', '.join(map(str, rec))})")
    path = _resolve_path(str(rec["path"]).strip(), base)
    name = None
    if has_label:
        if _blank(rec.get("label")):
            raise ValueError("missing label")
        name = _label_name(rec["label"])
    start, end = _seconds(rec.get("start_sec"), "start_sec"), _seconds(rec.get("end_sec"), "end_sec")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end_sec {end} <= start_sec {start}")
    vid = rec.get("video_id")
    video_id = str(vid).strip() if not _blank(vid) else posixpath.splitext(posixpath.basename(path))[0]
    extra = {k: v for k, v in rec.items() if k not in _CORE}
    return {**extra, "path": path, "label_name": name, "video_id": video_id,
            "start_sec": start, "end_sec": end, "_id_given": not _blank(vid)}


def _segment_ids(rows: list[dict[str, Any]]) -> None:
    """Rows without a given id whose default id (the file's stem) is shared by several segments
    get the segment in their id (`clip@12.5-30`), so segments of one video stay distinct."""
    shared: dict[str, int] = {}
    for r in rows:
        if not r["_id_given"] and (r["start_sec"] is not None or r["end_sec"] is not None):
            shared[r["video_id"]] = shared.get(r["video_id"], 0) + 1
    for r in rows:
        if not r.pop("_id_given") and shared.get(r["video_id"], 0) > 1:
            a, b = r["start_sec"], r["end_sec"]
            r["video_id"] += f"@{'' if a is None else f'{a:g}'}-{'' if b is None else f'{b:g}'}"


def _finish(records: list, errors: list[dict[str, str]], labels: LabelMap | None,
            base: str) -> Manifest:
    has_label = any("label" in rec for _, rec in records)
    good = []
    for where, rec in records:
        try:
            good.append((where, _parse(where, rec, base, has_label)))
        except ValueError as e:
            path = rec.get("path")
            errors.append(_error(str(path) if not _blank(path) else where, str(e)))
    _segment_ids([row for _, row in good])
    parsed = []
    first: dict[str, str] = {}  # video_id -> where it first appeared
    for where, row in good:
        if row["video_id"] in first:  # two rows, one id: outputs keyed by id would merge or drop one
            errors.append(_error(row["path"], f"duplicate video_id {row['video_id']!r} ({where}; first at "
                                              f"{first[row['video_id']]})"))
            continue
        first[row["video_id"]] = where
        parsed.append(row)
    if labels is None:
        labels = LabelMap.from_names(r["label_name"] for r in parsed if r["label_name"] is not None)
    rows = []
    for row in parsed:
        if row["label_name"] is None:
            rows.append({**row, "label": -1})
        elif row["label_name"] in labels:
            rows.append({**row, "label": labels.id(row["label_name"])})
        else:
            errors.append(_error(row["path"], f"unknown label {row['label_name']!r}"))
    return Manifest(rows=rows, errors=errors, labels=labels)
