"""jobs.transcode end to end on a real local Ray: local files and S3 on loopback, a bad video ->
an error row, re-runs resume, the output manifest trains like the source one."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jobs.transcode import main, plan_videos
from pipeline import storage
from pipeline.data.decode import Video
from pipeline.data.manifest import load_manifest
from pipeline.data.synthetic import make_corpus

ARGS = ["--gop", "8", "--crf", "18", "--videos-per-shard", "3", "--memory-mb", "64"]  # 64x48 frames: a finer CRF


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """4 labelled synthetic videos (64x48, 2 s at 30 fps) with train.csv; returns the folder."""
    root = str(tmp_path_factory.mktemp("tcorpus"))
    make_corpus(root, videos=4, seconds=2.0, size=(64, 48), seed=1, val_fraction=0)
    return root


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def test_transcode_local_with_a_bad_video_and_segments_then_resume(ray_local, corpus, corrupt_videos, tmp_path,
                                                                  capsys, file_snapshot):
    lines = open(os.path.join(corpus, "train.csv")).read().rstrip("\n").split("\n")
    header, rows = lines[0], lines[1:]
    assert header == "path,label,video_id"
    first_path = rows[0].split(",")[0]
    man = tmp_path / "in.csv"  # 4 videos, one of them as two segments, and a bad video
    man.write_text("path,label,video_id,start_sec,end_sec\n"
                   + "".join(f"{os.path.join(corpus, r.split(',')[0])},{r.split(',')[1]},{r.split(',')[2]},,\n"
                             for r in rows[1:])
                   + f"{os.path.join(corpus, first_path)},left,seg_a,0.0,1.0\n"
                   + f"{os.path.join(corpus, first_path)},left,seg_b,1.0,2.0\n"
                   + f"{corrupt_videos['text_as_mp4']},right,bad\n")
    out = str(tmp_path / "out")
    assert main(["--manifest", str(man), "--output", out, *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "5 videos (6 rows, 0 bad manifest rows) in 2 shards" in printed
    assert "4/5 videos ok, 1 failed" in printed

    errors = storage.read_parquet(os.path.join(out, "errors.parquet")).to_pylist()
    assert [(os.path.basename(e["uri"]), e["stage"]) for e in errors] == [("text_as_mp4.mp4", "open")]
    assert sorted(os.listdir(os.path.join(out, "videos"))) == sorted(n for _, n in plan_videos(
        load_manifest(str(man)).rows) if n != "bad.mp4")

    src, got = load_manifest(str(man)), load_manifest(os.path.join(out, "manifest.csv"))
    assert got.labels == src.labels and not got.errors
    by_id = {r["video_id"]: r for r in got.rows}
    assert sorted(by_id) == sorted(r["video_id"] for r in src.rows if r["video_id"] != "bad")
    assert by_id["seg_a"]["path"] == by_id["seg_b"]["path"]  # one copy per source video
    assert (by_id["seg_b"]["start_sec"], by_id["seg_b"]["end_sec"]) == (1.0, 2.0)
    assert open(os.path.join(out, "manifest.csv")).read().split("\n")[1].startswith("videos/")  # relative
    for r in src.rows:
        if r["video_id"] == "bad":
            continue
        copy = by_id[r["video_id"]]
        assert copy["label"] == r["label"] and copy["path"].startswith(os.path.join(out, "videos"))
        with Video(r["path"]) as a, Video(copy["path"]) as b:
            n = a.info.num_frames
            assert b.info.num_frames == n and [b.time_of(i) for i in range(n + 1)] == [a.time_of(i) for i in range(n + 1)]
            assert b.info.keyframes == tuple(sorted({*range(0, n, 8), n - 1}))  # + the last frame
            assert _psnr(a.read(range(n))[0], b.read(range(n))[0]) >= 35.0

    assert "1 x open: not a video file (PyAV could not read a container) e.g. " \
           f"{corrupt_videos['text_as_mp4']}" in printed  # the reason on the console

    # re-run: nothing redone, nothing rewritten; summary.json still describes the whole folder
    summary = storage.read_json(os.path.join(out, "summary.json"))
    assert summary["this_run"] == {**summary["this_run"], "shards": 2, "videos_ok": 4, "videos_failed": 1}
    before = file_snapshot(os.path.join(out, "videos"))
    assert main(["--manifest", str(man), "--output", out, *ARGS]) == 0
    assert "2 already complete, 0 to do" in capsys.readouterr().out
    again = storage.read_json(os.path.join(out, "summary.json"))
    assert {k: v for k, v in again.items() if k != "this_run"} == {k: v for k, v in summary.items() if k != "this_run"}
    assert summary["bytes_ratio"] > 0 and (again["this_run"]["shards"], again["this_run"]["videos_ok"]) == (0, 0)
    assert file_snapshot(os.path.join(out, "videos")) == before
    # an interrupted shard (marker lost, one copy lost): only that video is encoded again
    os.remove(os.path.join(out, "_progress", "shard-00000.json"))
    lost = os.path.join(out, "videos", plan_videos(src.rows)[0][1])  # shard 0: the first 3 videos
    os.remove(lost)
    assert main(["--manifest", str(man), "--output", out, *ARGS]) == 0
    assert "1 already complete, 1 to do" in capsys.readouterr().out
    after = file_snapshot(os.path.join(out, "videos"))
    assert set(after) == set(before) and after[lost] != before[lost]
    assert {k: v for k, v in after.items() if k != lost} == {k: v for k, v in before.items() if k != lost}


@pytest.mark.slow  # two job runs against S3 with retry backoffs (~20 s)
def test_storage_outage_is_retryable_and_a_rerun_completes(ray_local, corpus, s3_bucket, s3_proxy, capsys):
    src = f"s3://{s3_bucket}/corpus"
    for name in ("train.csv", "labels.json", *[f"videos/{v}" for v in sorted(os.listdir(os.path.join(corpus, "videos")))]):
        storage.write_bytes_atomic(storage.join(src, name), open(os.path.join(corpus, name), "rb").read())
    out = f"s3://{s3_bucket}/train-fmt"
    argv = ["--manifest", storage.join(src, "train.csv"), "--output", out, *ARGS, "--storage-attempts", "2",
            "--storage-backoff-s", "0.2", "--storage-outage-s", "60"]
    s3_proxy.fail(503, path_contains="/corpus/videos/clip_00001")  # one video's reads fail, the others' are fine
    try:
        assert main(argv) == 0
    finally:
        s3_proxy.heal()
    first = storage.read_json(storage.join(out, "summary.json"))
    assert (first["videos_ok"], first["videos_failed"], first["retryable"]) == (3, 1, 1)
    errors = storage.read_parquet(storage.join(out, "errors.parquet")).to_pylist()
    assert [e["stage"] for e in errors] == ["storage"] and "unavailable" in errors[0]["error"]
    printed = capsys.readouterr().out
    assert "because storage was unavailable" in printed
    assert "storage unavailable (" not in printed  # an isolated failure: its own retries, no job-wide pause

    assert main(argv) == 0
    summary = storage.read_json(storage.join(out, "summary.json"))
    assert (summary["videos_ok"], summary["videos_failed"], summary["retryable"]) == (4, 0, 0)
    assert not storage.exists(storage.join(out, "errors.parquet"))
    rows = load_manifest(storage.join(out, "manifest.csv")).rows
    assert len(rows) == 4 and all(r["path"].startswith(f"{out}/videos/") for r in rows)
    with storage.open_for_reading(rows[0]["path"]) as f, Video(f) as v:
        assert v.info.num_frames == 60 and v.info.keyframes == (*range(0, 60, 8), 59)


def test_user_errors_exit_2_before_ray(user_error, corpus, tmp_path):
    out = tmp_path / "out"
    man = os.path.join(corpus, "train.csv")
    user_error(main, ["--manifest", man], "--output")
    user_error(main, ["--manifest", tmp_path / "none.csv", "--output", out], "--manifest")
    user_error(main, ["--manifest", man, "--output", out, "--gop", "0"], "gop must be >= 1")
    user_error(main, ["--manifest", man, "--output", out, "--crf", "99"], "crf must be in")
    user_error(main, ["--manifest", man, "--output", out, "--codec", "nope264"], "--codec")
    user_error(main, ["--manifest", man, "--output", out, "--videos-per-shard", "0"], "--videos-per-shard")
    other = tmp_path / "preds"
    other.mkdir()
    (other / "predictions.parquet").write_bytes(b"PAR1")
    user_error(main, ["--manifest", man, "--output", other], "did not write")


def test_copy_names_are_safe_distinct_and_one_per_source():
    rows = [{"path": "/a/x.mp4", "video_id": "x"}, {"path": "/b/x.mp4", "video_id": "x"},
            {"path": "s3://b/long.mp4", "video_id": "long@0-10"}, {"path": "s3://b/long.mp4", "video_id": "long@10-20"},
            {"path": "/c/y.mp4", "video_id": "../../etc/passwd"}]
    plan = plan_videos(rows)
    assert [p for p, _ in plan] == ["/a/x.mp4", "/b/x.mp4", "s3://b/long.mp4", "/c/y.mp4"]
    names = [n for _, n in plan]
    assert names[0] == "x.mp4" and names[2] == "long.mp4" and len(set(names)) == 4
    assert all(n.endswith(".mp4") and ".." not in n and not n.startswith("/") for n in names)
