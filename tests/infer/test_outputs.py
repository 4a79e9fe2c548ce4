"""Output rows, part files and the merge: one row per video, ok over error, temporary files ignored."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from infer_cases import read_rows

from pipeline.data.errors import error_row
from pipeline.infer import failed_row, list_parts, merge_parts, part_name, write_part


def test_part_names_depend_only_on_the_set_of_ids():
    assert part_name(["b", "a"]) == part_name(["a", "b"])
    assert part_name(["a"]) != part_name(["a", "b"])
    assert part_name(["x"]).startswith("part-") and part_name(["x"]).endswith(".parquet")


def _ok_row(vid: str, label: str = "left") -> dict:
    row = failed_row(vid, error_row(f"/v/{vid}.mp4", "", ""))
    row.update(status="ok", stage=None, error=None, label=label, label_id=0, score=0.9,
               num_clips=1, duration=1.0, fps=15.0, top_labels=[label], top_ids=[0], top_scores=[0.9],
               timeline=[{"start_sec": 0.0, "end_sec": 1.0, "scores": [0.9, 0.1]}])
    return row


def test_merge_keeps_one_row_per_video_ok_over_error(tmp_path):
    out = str(tmp_path / "out")
    write_part(out, [failed_row("a", error_row("/v/a.mp4", "open", "transient")), _ok_row("b")])
    write_part(out, [_ok_row("a"), failed_row("c", error_row("/v/c.mp4", "open", "missing"))])  # rerun
    write_part(out, [_ok_row("b", "up"), _ok_row("zzz")])  # b again; zzz is not in this input
    (tmp_path / "out" / "parts" / ".part-x.parquet.123.tmp").write_bytes(b"half written")
    assert len(list_parts(out)) == 3  # temporary files are not parts
    counts = merge_parts(out, ["a", "b", "c"], jsonl=True)
    rows = read_rows(out)
    assert sorted(r["video_id"] for r in rows) == ["a", "b", "c"]
    assert {r["video_id"]: r["status"] for r in rows} == {"a": "ok", "b": "ok", "c": "error"}
    assert counts == {"rows": 3, "ok": 2, "errors": 1, "with_target": 0, "correct": 0, "clips": 2}  # clips of the ok rows
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["video_id"] for x in lines) == ["a", "b", "c"]
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    assert errors == [{"uri": "/v/c.mp4", "stage": "open", "error": "missing"}]

