"""Manifests: CSV / JSONL / Parquet, class folders, HowTo100M CSVs, bad rows, labels.json."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from pipeline import storage
from pipeline.data.manifest import (LabelMap, load_folder, load_howto100m, load_manifest,
                                    read_labels, read_manifest, write_labels)

ROWS = [
    {"path": "videos/a.mp4", "label": "walk", "video_id": "va"},
    {"path": "videos/b.mp4", "label": "run", "start_sec": 1.5, "end_sec": 4.0},
    {"path": "/abs/c.mp4", "label": "jump", "video_id": "vc"},
    {"path": "s3://other/d.mp4", "label": "walk"},
]


def _write_csv(path, rows, header=("path", "label", "video_id", "start_sec", "end_sec")):
    lines = [",".join(header)]
    for r in rows:
        lines.append(",".join("" if r.get(h) is None else str(r[h]) for h in header))
    storage.write_bytes_atomic(str(path), ("\n".join(lines) + "\n").encode())
    return str(path)


def _write_jsonl(path, rows):
    storage.write_bytes_atomic(str(path), "".join(json.dumps(r) + "\n" for r in rows).encode())
    return str(path)


def _write_parquet(path, rows):
    cols = {k: [r.get(k) for r in rows] for k in ("path", "label", "video_id", "start_sec", "end_sec")}
    storage.write_parquet_atomic(str(path), pa.table(cols))
    return str(path)


@pytest.mark.parametrize("writer,ext", [(_write_csv, "csv"), (_write_jsonl, "jsonl"),
                                        (_write_parquet, "parquet")])
def test_table_formats_give_the_same_rows(tmp_path, writer, ext):
    uri = writer(tmp_path / f"m.{ext}", ROWS)
    m = load_manifest(uri)
    assert m.errors == []
    assert m.labels.names == ("jump", "run", "walk")  # sorted names -> ids
    by_path = {r["path"]: r for r in m.rows}
    a = by_path[str(tmp_path / "videos" / "a.mp4")]  # relative -> beside the manifest
    assert (a["label"], a["label_name"], a["video_id"]) == (2, "walk", "va")
    assert a["start_sec"] is None and a["end_sec"] is None
    b = by_path[str(tmp_path / "videos" / "b.mp4")]
    assert (b["label"], b["video_id"], b["start_sec"], b["end_sec"]) == (1, "b", 1.5, 4.0)
    assert by_path["/abs/c.mp4"]["label"] == 0
    assert by_path["s3://other/d.mp4"]["video_id"] == "d"
    assert [r["path"] for r in m.rows] == [r["path"] for r in read_manifest(uri)]


def test_relative_paths_on_s3_resolve_to_s3(s3_bucket):
    uri = _write_csv(f"s3://{s3_bucket}/data/train.csv", ROWS[:2])
    rows = read_manifest(uri)
    assert [r["path"] for r in rows] == [f"s3://{s3_bucket}/data/videos/a.mp4",
                                         f"s3://{s3_bucket}/data/videos/b.mp4"]


def test_bad_rows_are_returned_not_raised(tmp_path):
    text = ("path,label,video_id,start_sec,end_sec\n"
            "ok.mp4,cat,,,\n"
            ",cat,,,\n"                 # missing path
            "nolabel.mp4,,,,\n"         # missing label
            "num.mp4,cat,,abc,\n"       # bad number
            "neg.mp4,dog,,-1,\n"        # negative time
            "order.mp4,dog,,5,2\n"      # end before start
            "extra.mp4,dog,,,,surplus\n"  # more cells than header
            "ok2.mp4,dog,,0.5,2\n")
    uri = str(tmp_path / "m.csv")
    storage.write_bytes_atomic(uri, text.encode())
    m = load_manifest(uri)
    assert [os.path.basename(r["path"]) for r in m.rows] == ["ok.mp4", "ok2.mp4"]
    assert len(m.errors) == 6
    assert all(e["stage"] == "manifest" and e["error"] for e in m.errors)
    messages = " | ".join(e["error"] for e in m.errors)
    for word in ("missing path", "missing label", "not a number", ">= 0", "end_sec", "more cells"):
        assert word in messages
    missing_path = [e for e in m.errors if e["error"] == "missing path"][0]
    assert missing_path["uri"] == f"{uri}#L3"  # rows without a path are located by line


def test_bad_jsonl_lines_and_unknown_labels(tmp_path):
    labels = tmp_path / "classes.json"
    write_labels(str(labels), LabelMap(("cat", "dog")))
    uri = str(tmp_path / "m.jsonl")
    storage.write_bytes_atomic(uri, b'{"path": "a.mp4", "label": "dog"}\n{not json\n[1, 2]\n'
                               b'{"path": "b.mp4", "label": "cow"}\n')
    m = load_manifest(uri, labels=str(labels))
    assert [(os.path.basename(r["path"]), r["label"]) for r in m.rows] == [("a.mp4", 1)]
    errors = sorted(e["error"] for e in m.errors)
    assert len(errors) == 3
    assert any("unknown label 'cow'" in e for e in errors)
    assert sum("bad JSON line" in e for e in errors) == 2


def test_labels_json_beside_manifest_fixes_ids(tmp_path):
    """val manifests missing a class must keep the train ids: labels.json beside wins."""
    write_labels(str(tmp_path / "labels.json"), LabelMap(("zebra", "ant", "moose")))
    uri = _write_csv(tmp_path / "val.csv", [{"path": "x.mp4", "label": "moose"},
                                            {"path": "y.mp4", "label": "zebra"}])
    m = load_manifest(uri)
    assert m.labels.names == ("zebra", "ant", "moose")
    assert [r["label"] for r in m.rows] == [2, 0]


def test_no_label_column_means_unlabelled(tmp_path):
    uri = str(tmp_path / "infer.csv")
    storage.write_bytes_atomic(uri, b'path,segments\na.mp4,[]\nb.mp4,"[[0, 1, ""x""]]"\n')
    m = load_manifest(uri)
    assert m.errors == []
    assert [r["label"] for r in m.rows] == [-1, -1]
    assert m.rows[1]["segments"] == '[[0, 1, "x"]]'  # extra columns pass through


@pytest.mark.parametrize("where", ["local", "s3"])
def test_folder_per_class(tmp_path, where, request):
    root = str(tmp_path / "ds") if where == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/ds"
    for rel in ("dog/1.mp4", "dog/sub/2.MP4", "cat/3.webm", "cat/readme.txt", "loose.mp4"):
        storage.write_bytes_atomic(storage.join(root, rel), b"x")
    m = load_manifest(root)
    got = sorted((r["path"].split("/ds/")[1], r["label_name"], r["label"], r["video_id"]) for r in m.rows)
    assert got == [("cat/3.webm", "cat", 0, "3"), ("dog/1.mp4", "dog", 1, "1"),
                   ("dog/sub/2.MP4", "dog", 1, "2")]
    assert load_folder(root).labels.names == ("cat", "dog")


@pytest.mark.parametrize("header", [False, True])
def test_howto100m_task_csv(tmp_path, header):
    lines = ["video_id,category_1,category_2,rank,task_id"] if header else []
    if header:
        lines += ["vid1,Food,Cooking,1,120", "vid2,Food,Cooking,2,9", "vid3,Cars,Repair,3,1000",
                  ",x,y,4,9"]
    else:
        lines += ["vid1,120", "vid2,9", "vid3,1000", ",9", "lonely"]
    uri = str(tmp_path / "howto.csv")
    storage.write_bytes_atomic(uri, ("\n".join(lines) + "\n").encode())
    m = load_howto100m(uri, "s3://bucket/howto100m/{video_id}.mp4")
    assert m.labels.names == ("9", "120", "1000")  # integer task ids sort numerically
    assert [(r["path"], r["label"], r["video_id"]) for r in m.rows] == [
        ("s3://bucket/howto100m/vid1.mp4", 1, "vid1"),
        ("s3://bucket/howto100m/vid2.mp4", 0, "vid2"),
        ("s3://bucket/howto100m/vid3.mp4", 2, "vid3")]
    assert len(m.errors) == (1 if header else 2)
    assert all(e["stage"] == "manifest" for e in m.errors)


def test_labels_roundtrip_and_formats(tmp_path):
    lm = LabelMap(("b", "a", "c"))
    uri = str(tmp_path / "labels.json")
    write_labels(uri, lm)
    assert read_labels(uri) == lm
    assert json.loads(open(uri).read())["name_to_id"] == {"b": 0, "a": 1, "c": 2}
    assert (lm.id("c"), lm.name(1), len(lm), "a" in lm, "z" in lm) == (2, "a", 3, True, False)
    assert LabelMap.from_json(["x", "y"]).names == ("x", "y")
    assert LabelMap.from_json({"y": 1, "x": 0}).names == ("x", "y")
    with pytest.raises(ValueError):
        LabelMap.from_json({"x": 0, "y": 2})
    with pytest.raises(ValueError):
        LabelMap(("a", "a"))
    with pytest.raises(KeyError):
        lm.id("z")
    assert LabelMap.from_names(["b", "a", "b"]).names == ("a", "b")


def test_missing_or_unknown_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_manifest(str(tmp_path / "nope.csv"))
    with pytest.raises(FileNotFoundError, match="no-folder"):
        load_manifest(str(tmp_path / "no-folder"))
    storage.write_bytes_atomic(str(tmp_path / "list.txt"), b"a.mp4\n")
    with pytest.raises(ValueError, match="unknown manifest format"):
        load_manifest(str(tmp_path / "list.txt"))


def test_duplicate_ids_are_bad_rows_and_segments_get_their_own_ids(tmp_path):
    man = tmp_path / "m.csv"
    man.write_text("path,label,video_id,start_sec,end_sec\n"
                   "a.mp4,x,,0,5\na.mp4,y,,5,10\nb.mp4,x,same,,\nc.mp4,y,same,,\n")
    m = load_manifest(str(man))
    assert [r["video_id"] for r in m.rows] == ["a@0-5", "a@5-10", "same"]
    assert len(m.errors) == 1 and m.errors[0]["uri"].endswith("c.mp4")
    assert "duplicate video_id 'same'" in m.errors[0]["error"] and m.errors[0]["stage"] == "manifest"


@pytest.mark.parametrize("howto", [False, True])
def test_an_oversized_csv_field_is_one_bad_row(tmp_path, howto):
    huge = "x" * (20 << 20)  # 20 MiB, over the csv module's field size limit
    p = tmp_path / "m.csv"
    if howto:
        p.write_text(f"v1,3\n{huge},4\nv2,5\n")
        man = load_howto100m(str(p), "/v/{video_id}.mp4")
    else:
        p.write_text(f"path,label\na.mp4,walk\n{huge}.mp4,run\nb.mp4,run\n")
        man = load_manifest(str(p))
    assert [r["path"].rsplit("/", 1)[-1] for r in man.rows] == (["v1.mp4", "v2.mp4"] if howto else ["a.mp4", "b.mp4"])
    assert len(man.errors) == 1 and man.errors[0]["uri"].endswith("#L2" if howto else "#L3")
    assert "field larger than field limit" in man.errors[0]["error"]
