"""The input videos (a folder or a manifest) and the class names, on local files."""

from __future__ import annotations

import pytest

from pipeline.data.manifest import LabelMap, write_labels
from pipeline.infer import list_videos, read_label_names


def test_a_folder_gives_ids_relative_to_it_without_the_extension(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.mp4", "sub/b.mkv", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    items, bad = list_videos(str(tmp_path))
    assert sorted(it["video_id"] for it in items) == ["a", "sub/b"]
    assert all(it["target"] is None and it["uri"].endswith((".mp4", ".mkv")) for it in items)
    assert bad == []


def test_one_video_file_is_one_item_named_after_the_file(tmp_path):
    (tmp_path / "long_video.mp4").write_bytes(b"x")
    items, bad = list_videos(str(tmp_path / "long_video.mp4"))
    assert [(it["video_id"], it["uri"]) for it in items] == [("long_video", str(tmp_path / "long_video.mp4"))]
    assert bad == []


def test_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing at"):
        list_videos(str(tmp_path / "absent"))


def test_a_duplicate_id_is_an_error_row_not_a_lost_video(tmp_path):
    man = tmp_path / "m.csv"
    man.write_text("path,video_id,label\n/v/a.mp4,a,left\n/v/a2.mp4,a,up\n/v/b.mp4,b,up\n")
    items, bad = list_videos(str(man))
    assert [(it["video_id"], it["uri"], it["target"]) for it in items] == [
        ("a", "/v/a.mp4", "left"), ("b", "/v/b.mp4", "up")]
    assert [(r["video_id"], r["uri"], r["status"]) for r in bad] == [("a2", "/v/a2.mp4", "error")]
    assert "duplicate video_id 'a'" in bad[0]["error"]


def test_a_folder_with_two_files_of_one_id_reports_the_second(tmp_path):
    for name in ("a.mp4", "a.mkv"):
        (tmp_path / name).write_bytes(b"x")
    items, bad = list_videos(str(tmp_path))
    assert len(items) == 1 and items[0]["video_id"] == "a"
    assert [r["video_id"] for r in bad] == ["a#2"] and "duplicate" in bad[0]["error"]


def test_manifest_segments_reach_the_items(tmp_path):
    man = tmp_path / "m.csv"
    man.write_text("path,start_sec,end_sec\n/v/a.mp4,1.5,4\n/v/a.mp4,4,9\n")
    items, bad = list_videos(str(man))
    assert [(it["video_id"], it["start_sec"], it["end_sec"]) for it in items] == [
        ("a@1.5-4", 1.5, 4.0), ("a@4-9", 4.0, 9.0)]
    assert bad == []


def test_label_names_beside_the_checkpoint_given_or_ids(tmp_path):
    ckpt = str(tmp_path / "model.pt")
    assert read_label_names(None, ckpt, 3) == ["0", "1", "2"]  # no labels.json anywhere
    write_labels(str(tmp_path / "labels.json"), LabelMap(("x", "y", "z")))
    assert read_label_names(None, ckpt, 3) == ["x", "y", "z"]
    other = str(tmp_path / "other.json")
    write_labels(other, LabelMap(("p", "q", "r")))
    assert read_label_names(other, ckpt, 3) == ["p", "q", "r"]
    write_labels(other, LabelMap(("p", "q")))
    with pytest.raises(ValueError, match="2 labels for a model with 3 classes"):
        read_label_names(other, ckpt, 3)
    with pytest.raises(FileNotFoundError, match="labels file not found"):
        read_label_names(str(tmp_path / "absent.json"), ckpt, 3)
