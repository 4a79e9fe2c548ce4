"""`make demo`'s driver end to end at a small size: generate -> preprocess -> train -> infer."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

import pipeline.model as pm
from jobs import demo


def test_sizes_training_cannot_use_are_refused_before_anything_is_written(user_error, tmp_path):
    out = tmp_path / "demo"
    err = user_error(demo.main, ["--output", out, "--videos", "16", "--epochs", "2"], "--videos 16:")
    assert "12 training" in err and "use --videos 20 or more" in err  # what make_synthetic + make_plan give
    user_error(demo.main, ["--output", out, "--videos", "20", "--epochs", "0"], "--epochs: must be >= 1")
    user_error(demo.main, ["--output", out, "--long-videos", "0"], "--long-videos: must be >= 1")
    assert not out.exists()


def test_a_folder_with_the_user_s_files_is_refused_and_they_survive(user_error, tmp_path):
    out = tmp_path / "my_folder"
    (out / "data").mkdir(parents=True)
    (out / "runs").mkdir()
    (out / "data" / "my_annotations.csv").write_text("mine")
    (out / "runs" / "my_old_run.txt").write_text("mine")
    err = user_error(demo.main, ["--output", out], "data/my_annotations.csv")
    assert "runs/my_old_run.txt" in err and "--overwrite" in err
    assert (out / "data" / "my_annotations.csv").read_text() == "mine"


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(ray_local, tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    (out / "runs").mkdir()
    (out / "data" / "my_annotations.csv").write_text("mine")  # the user's: kept with --overwrite
    (out / "runs" / "my_old_run.txt").write_text("mine")
    assert demo.main(["--output", str(out), "--videos", "24", "--long-videos", "2",
                      "--segment-seconds", "15", "--epochs", "1", "--overwrite"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    # readable in a log file: no progress bars redrawn with carriage returns (stderr is no terminal)
    assert "\r" not in captured.out + captured.err and len(captured.out + captured.err) < 200_000
    assert (out / "data" / "my_annotations.csv").read_text() == "mine"
    assert (out / "runs" / "my_old_run.txt").read_text() == "mine"
    listed = json.loads((out / "_demo.json").read_text())["files"]
    assert "runs/demo/model.pt" in listed and "data/my_annotations.csv" not in listed
    # the console: steps, progress, summary; no raw metrics dump (Ray's own lines: tests/test_raystart.py)
    assert '"metrics": {' not in printed and "[train] finished: step 1" in printed

    # 2: Parquet frame shards of the validation split, with summary and labels beside them
    summary = json.loads((out / "shards" / "summary.json").read_text())
    assert summary["videos_ok"] == summary["clips"] > 0 and summary["videos_failed"] == 0
    assert json.loads((out / "shards" / "labels.json").read_text())
    # 3: a trained model in our format, metrics and curves in the run folder
    model = pm.load(str(out / "runs" / "demo" / "model.pt"))
    assert model.config.num_frames == 8 and model.config.attention == "divided"
    assert (out / "runs" / "demo" / "metrics.png").stat().st_size > 10_000
    assert any("val_acc" in json.loads(l) for l in (out / "runs" / "demo" / "metrics.jsonl").read_text().splitlines())
    # 4: one prediction per long video, a timeline covering its 60 s, a PNG each
    rows = pq.read_table(out / "predictions" / "predictions.parquet").to_pylist()
    assert sorted(r["video_id"] for r in rows) == ["long_00000", "long_00001"]
    for r in rows:
        assert r["status"] == "ok" and r["duration"] == pytest.approx(60.0, abs=0.1)
        ends = [c["end_sec"] for c in r["timeline"]]
        assert r["num_clips"] == len(ends) and max(ends) == pytest.approx(60.0, abs=0.1)
    assert len(list((out / "predictions" / "plots").glob("*.png"))) == 2
    # no clip flags but --clip.sampling cover: frames, rate and crop came from model.pt's recipe (8 x 4, 32 px)
    spec = json.loads((out / "predictions" / "summary.json").read_text())["clip_spec"]
    assert (spec["num_frames"], spec["sampling_rate"], spec["crop_size"], spec["sampling"]) == (8, 4, 32, "cover")
    for line in ("validation clip accuracy:", "video-level accuracy:", "timeline clip accuracy:", "training curves:",
                 "timelines:"):
        assert line in printed
