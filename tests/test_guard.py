"""pipeline.guard: a job's output folder holds only what the job wrote; a re-run removes exactly
those files (the demo's marker lists them) and never one of the user's; a refusal names the
files, or the flags whose values differ."""

from __future__ import annotations

import json

import pytest

from pipeline.guard import OutputConflict, OwnFiles, claim_output, differences


def _write(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_fresh_run_removes_exactly_the_files_the_last_run_listed(tmp_path):
    out = tmp_path / "demo"
    own = OwnFiles(out, "_demo.json", job="jobs.demo", overwrite=False)  # a new folder: nothing to refuse
    own.claim()
    _write(out / "data" / "videos" / "a.mp4")
    _write(out / "runs" / "demo" / "model.pt")
    own.record()
    assert json.loads((out / "_demo.json").read_text())["files"] == ["data/videos/a.mp4", "runs/demo/model.pt"]

    again = OwnFiles(out, "_demo.json", job="jobs.demo", overwrite=False)  # its own files: no refusal
    again.claim()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["_demo.json"]


def test_a_folder_of_the_user_s_files_is_refused_naming_them_and_overwrite_keeps_them(tmp_path):
    out = tmp_path / "my_folder"
    _write(out / "data" / "my_annotations.csv", "mine")
    _write(out / "runs" / "my_old_run.txt", "mine")
    with pytest.raises(OutputConflict) as e:
        OwnFiles(out, "_demo.json", job="jobs.demo", overwrite=False)
    text = str(e.value)
    assert "data/my_annotations.csv" in text and "runs/my_old_run.txt" in text and "--overwrite" in text
    assert "\n" not in text

    own = OwnFiles(out, "_demo.json", job="jobs.demo", overwrite=True)
    own.claim()
    _write(out / "data" / "train.csv")
    own.record()
    assert json.loads((out / "_demo.json").read_text())["files"] == ["data/train.csv"]  # the user's: unlisted
    OwnFiles(out, "_demo.json", job="jobs.demo", overwrite=True).claim()  # the next fresh run
    assert not (out / "data" / "train.csv").exists()
    assert (out / "data" / "my_annotations.csv").read_text() == "mine"
    assert (out / "runs" / "my_old_run.txt").read_text() == "mine"


def test_a_file_added_after_a_run_is_the_user_s(tmp_path):
    out = tmp_path / "demo"
    own = OwnFiles(out, "_demo.json", job="jobs.demo", overwrite=False)
    own.claim()
    _write(out / "data" / "train.csv")
    own.record()
    _write(out / "data" / "notes.txt", "mine")
    with pytest.raises(OutputConflict, match="data/notes.txt"):
        OwnFiles(out, "_demo.json", job="jobs.demo", overwrite=False)
    OwnFiles(out, "_demo.json", job="jobs.demo", overwrite=True).claim()
    assert (out / "data" / "notes.txt").read_text() == "mine" and not (out / "data" / "train.csv").exists()


def test_a_marker_cannot_list_files_outside_its_folder(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("mine")
    out = tmp_path / "demo"
    _write(out / "_demo.json", json.dumps({"job": "jobs.demo", "files": ["../precious.txt", str(outside)]}))
    OwnFiles(out, "_demo.json", job="jobs.demo", overwrite=False).claim()
    assert outside.read_text() == "mine"


def test_a_config_that_differs_names_the_flags_and_values(tmp_path):
    out = str(tmp_path / "shards")
    config = {"manifest": "m.csv", "data": {"num_frames": 8, "train_short_side": [32, 32], "short_side": 32},
              "manifest_sha1": "a", "seed": 0}
    claim_output(out, "_progress/config.json", config, overwrite=False, owned=("clips",), job="jobs.preprocess")
    other = {**config, "data": {"num_frames": 16, "train_short_side": [40, 40], "short_side": 40},
             "manifest_sha1": "b"}
    with pytest.raises(OutputConflict) as e:
        claim_output(out, "_progress/config.json", other, overwrite=False, owned=("clips",), job="jobs.preprocess")
    assert "differs in --num-frames (8 there, 16 now), --short-side (32 there, 40 now), the manifest's rows" in str(e.value)


def test_differences_of_nested_configs():
    assert differences({"a": {"crop_size": None}, "memory": 1}, {"a": {"crop_size": 32}, "memory": 2}) == [
        "--crop-size (None there, 32 now)", "--memory-mb (1 there, 2 now)"]
