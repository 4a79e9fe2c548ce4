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


def test_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing at"):
        list_videos(str(tmp_path / "absent"))


def test_a_manifest_keeps_the_first_of_duplicate_ids(tmp_path):
    man = tmp_path / "m.csv"
    man.write_text("path,video_id,label\n/v/a.mp4,a,left\n/v/a2.mp4,a,up\n/v/b.mp4,b,up\n")
    items, bad = list_videos(str(man))
    assert [(it["video_id"], it["uri"], it["target"]) for it in items] == [
        ("a", "/v/a.mp4", "left"), ("b", "/v/b.mp4", "up")]
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
