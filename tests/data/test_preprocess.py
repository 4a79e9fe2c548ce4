"""jobs.preprocess end to end on a real local Ray against S3 on loopback (moto) and local disk:
shards read back and checked frame by frame, re-runs skip complete shards, bad input -> errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import ray

from jobs.preprocess import main
from pipeline import storage
from pipeline.data.rows import DecodeConfig, video_clips
from pipeline.data.manifest import read_labels
from pipeline.data.synthetic import make_corpus

ARGS = ["--num-frames", "4", "--sampling-rate", "4", "--clips", "2", "--short-side", "40",
        "--crop-size", "32", "--rows-per-shard", "4", "--shard-mb", "0.03", "--memory-mb", "64"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """A local synthetic corpus of 6 tiny labelled videos (64x48, 2 s); returns its folder."""
    root = str(tmp_path_factory.mktemp("corpus"))
    make_corpus(root, videos=6, seconds=2.0, size=(64, 48), seed=0)
    return root


def _upload_with_bad_rows(corpus: str, dest: str, corrupt_videos: dict) -> str:
    """Copy the corpus (train.csv + videos + labels.json) to `dest` and add bad rows."""
    for uri in storage.list_files(corpus):
        rel = os.path.relpath(uri, corpus)
        storage.write_bytes_atomic(storage.join(dest, rel), storage.read_bytes(uri))
    # all 6 videos: train.csv (with its header) + val.csv's rows
    lines = storage.read_bytes(storage.join(corpus, "train.csv")).decode().rstrip("\n").split("\n")
    lines += storage.read_bytes(storage.join(corpus, "val.csv")).decode().rstrip("\n").split("\n")[1:]
    for name in ("truncated", "text_as_mp4", "audio_only", "zero_bytes"):
        storage.write_bytes_atomic(storage.join(dest, "bad", f"{name}.mp4"),
                                   open(corrupt_videos[name], "rb").read())
        lines.append(f"bad/{name}.mp4,left,{name}")
    lines += ["bad/missing.mp4,left,missing", ",left,nopath", "videos/clip_00000.mp4,sideways,x"]
    uri = storage.join(dest, "manifest.csv")
    storage.write_bytes_atomic(uri, ("\n".join(lines) + "\n").encode())
    return uri


def test_preprocess_to_s3_rerun_and_errors(ray_local, corpus, corrupt_videos, s3_bucket, capsys):
    src = f"s3://{s3_bucket}/corpus"
    manifest = _upload_with_bad_rows(corpus, src, corrupt_videos)
    out = f"s3://{s3_bucket}/clips"
    assert main(["--manifest", manifest, "--output", out, *ARGS]) == 0
    printed = capsys.readouterr().out
    # 6 good + 5 bad videos in the table (11 rows -> 3 shards), 2 bad manifest rows
    assert "6/13 videos ok, 7 failed, 12 clips" in printed
    # the reasons on the console, by kind, one example each (all rows are in errors.parquet)
    assert f"1 x open: truncated or missing its index (an MP4/QuickTime file without its moov box: a cut " \
           f"download or an unfinished recording) e.g. {src}/bad/truncated.mp4" in printed
    assert f"1 x open: not a video file (PyAV could not read a container) e.g. {src}/bad/text_as_mp4.mp4" in printed
    assert f"1 x stream: no video stream (streams: audio) e.g. {src}/bad/audio_only.mp4" in printed

    summary = storage.read_json(storage.join(out, "summary.json"))
    assert (summary["videos_ok"], summary["videos_failed"], summary["clips"]) == (6, 7, 12)
    assert summary["manifest_errors"] == 2 and summary["shards"] == 3
    assert summary["config"]["data"]["num_frames"] == 4
    assert read_labels(storage.join(out, "labels.json")).names == ("left", "right", "up", "down")

    errors = storage.read_parquet(storage.join(out, "errors.parquet")).to_pylist()
    failed = {e["uri"].rsplit("/", 1)[-1].split("#")[0]: e["stage"] for e in errors}
    assert set(failed) == {"truncated.mp4", "text_as_mp4.mp4", "audio_only.mp4", "zero_bytes.mp4",
                           "missing.mp4", "manifest.csv", "clip_00000.mp4"}
    assert failed["missing.mp4"] == "open" and failed["audio_only.mp4"] == "stream"
    assert failed["manifest.csv"] == failed["clip_00000.mp4"] == "manifest"

    # Shards read back from S3 with Ray Data (pyarrow S3 filesystem from the same env)
    files = storage.list_files(storage.join(out, "clips"), (".parquet",))
    assert [f.rsplit("/", 1)[-1] for f in files] == sorted(os.path.basename(f) for f in summary["files"])
    assert all(storage.read_bytes(f)[:4] == b"PAR1" for f in files)
    fs, path = storage.arrow_filesystem(storage.join(out, "clips"))
    rows = ray.data.read_parquet(path, filesystem=fs).take_all()
    assert len(rows) == 12
    cfg = DecodeConfig(num_frames=4, sampling_rate=4, crop_size=32, train_short_side=(40, 40),
                     short_side=40, clips=2)
    for r in rows:
        assert r["frames"].shape == (4, 32, 32, 3) and r["frames"].dtype == np.uint8
        local = os.path.join(corpus, "videos", f"{r['video_id']}.mp4")
        want = video_clips(local, {"path": local, "label": r["label"], "video_id": r["video_id"]},
                           cfg, mode="test", seed=0)[r["clip_index"]]
        np.testing.assert_array_equal(r["frames"], want["frames"])  # same pixels as a direct decode
        assert r["start_sec"] == pytest.approx(want["start_sec"])

    # Re-run: everything complete -> nothing redone; summary.json still describes the whole folder
    assert summary["this_run"] == {**summary["this_run"], "shards": 3, "videos_ok": 6, "videos_failed": 5,
                                   "clips": 12, "retryable": 0}
    assert main(["--manifest", manifest, "--output", out, *ARGS]) == 0
    assert "3 already complete, 0 to do" in capsys.readouterr().out
    again = storage.read_json(storage.join(out, "summary.json"))
    assert {k: v for k, v in again.items() if k != "this_run"} == {k: v for k, v in summary.items() if k != "this_run"}
    assert again["this_run"] == {"shards": 0, "videos_ok": 0, "videos_failed": 0, "retryable": 0, "clips": 0,
                                 "files": 0, "seconds": again["this_run"]["seconds"]}
    # Lose one shard's marker and data: only that shard is redone, same names
    storage.remove(storage.join(out, "_progress", "shard-00001.json"))
    storage.remove(next(f for f in files if "shard-00001-" in f))
    assert main(["--manifest", manifest, "--output", out, *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "2 already complete, 1 to do" in printed and "shard 00001 done" in printed
    assert storage.list_files(storage.join(out, "clips"), (".parquet",)) == files
    assert storage.read_json(storage.join(out, "summary.json"))["clips"] == 12

    # Another config into the same output is refused
    other = [a if a != "4" else "3" for a in ARGS]
    assert main(["--manifest", manifest, "--output", out, *other]) == 2


def test_preprocess_cover_whole_frames_local(ray_local, corpus, tmp_path, capsys):
    out = str(tmp_path / "out")
    argv = ["--manifest", os.path.join(corpus, "train.csv"), "--output", out, "--sampling", "cover",
            "--num-frames", "4", "--sampling-rate", "4", "--short-side", "40", "--crop-size", "0",
            "--memory-mb", "64"]
    assert main(argv) == 0
    assert "4/4 videos ok, 0 failed, 16 clips" in capsys.readouterr().out  # train split: 4 of 6
    assert not os.path.exists(os.path.join(out, "errors.parquet"))
    rows = ray.data.read_parquet(os.path.join(out, "clips")).take_all()
    assert len(rows) == 16  # 60 frames / 16-frame spans -> 4 clips per video
    assert {r["frames"].shape for r in rows} == {(4, 40, 53, 3)}  # whole 64x48 frames, short side 40
    for vid in {r["video_id"] for r in rows}:
        starts = sorted(round(r["start_sec"] * 30) for r in rows if r["video_id"] == vid)
        assert starts == [0, 16, 32, 48]
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    assert summary["config"]["data"]["sampling"] == "cover"


def test_shards_are_bounded_row_groups_whatever_the_clip_size():
    from jobs.preprocess import PreprocessConfig
    from jobs.shards import plan_shards, shard_index, shard_name

    rows = PreprocessConfig().rows_per_shard  # the default does not depend on frames or --shard-mb
    shards = plan_shards(1_200_000, rows)  # HowTo100M: 96-frame cover clips once gave 600,000 shards
    assert len(shards) == -(-1_200_000 // rows) <= 20_000
    assert shards[-1][2] == 1_200_000 and all(hi - lo <= rows for _, lo, hi in shards)
    for i in (12, 123_456):  # names past 5 digits still parse back
        assert shard_index("s3://b/out/_progress/" + shard_name(i) + ".json") == i
        assert shard_index(shard_name(i, 3)) == i


def test_shard_tasks_in_flight_follow_the_cluster_size():
    from jobs.shards import max_in_flight

    assert max_in_flight(cluster_cpus=64, num_cpus=1.0) == 130  # two per slot, + 2
    assert max_in_flight(cluster_cpus=32, num_cpus=1.0) == 66  # a node lost: fewer, read again as it goes
    assert max_in_flight(cluster_cpus=0.5, num_cpus=2.0) == 4  # at least one slot


def _upload_corpus(corpus: str, src: str) -> None:
    for name in ("train.csv", "labels.json", *[f"videos/{v}" for v in sorted(os.listdir(os.path.join(corpus, "videos")))]):
        storage.write_bytes_atomic(storage.join(src, name), open(os.path.join(corpus, name), "rb").read())


def _s3_argv(src: str, out: str) -> list[str]:
    return ["--manifest", storage.join(src, "train.csv"), "--output", out, "--num-frames", "4",
            "--sampling-rate", "4", "--short-side", "40", "--rows-per-shard", "2", "--memory-mb", "64",
            "--storage-attempts", "2", "--storage-backoff-s", "0.2"]


def test_storage_outage_is_retryable_and_a_rerun_delivers_every_video(ray_local, corpus, s3_bucket, s3_proxy,
                                                                       capsys):
    src = f"s3://{s3_bucket}/corpus"
    _upload_corpus(corpus, src)
    out = f"s3://{s3_bucket}/clips"
    argv = [*_s3_argv(src, out), "--storage-outage-s", "2"]  # readers wait 2 s for storage, then give up
    s3_proxy.fail(503, path_contains="/corpus/videos/")  # every video read answers 503: a full outage
    try:
        assert main(argv) == 0
    finally:
        s3_proxy.heal()
    first = storage.read_json(storage.join(out, "summary.json"))
    assert first["retryable"] >= 1 and first["videos_failed"] == first["retryable"]  # none called bad
    errors = storage.read_parquet(storage.join(out, "errors.parquet")).to_pylist()
    assert {e["stage"] for e in errors} == {"storage"} and all("unavailable" in e["error"] for e in errors)
    printed = capsys.readouterr().out
    assert "because storage was unavailable" in printed
    assert "--storage-outage-s" in printed  # the console said that the readers gave up waiting
    assert main(argv) == 0  # storage is back: the partial shards are redone, the complete ones kept
    printed = capsys.readouterr().out
    summary = storage.read_json(storage.join(out, "summary.json"))
    assert (summary["videos_ok"], summary["videos_failed"], summary["retryable"]) == (4, 0, 0)
    assert "already complete" in printed and not storage.exists(storage.join(out, "errors.parquet"))
    files = storage.list_files(storage.join(out, "clips"), (".parquet",))
    assert sorted(os.path.basename(f) for f in files) == sorted(os.path.basename(f) for f in summary["files"])


def test_at_20_percent_storage_faults_the_output_is_a_clean_runs(ray_local, corpus, s3_bucket, s3_proxy):
    """503s, reset connections and delays on a fifth of all requests (reads, writes, listings, from
    the driver and the Ray workers): retried, so the files are the clean run's, byte for byte."""
    src = f"s3://{s3_bucket}/corpus"
    _upload_corpus(corpus, src)
    clean, faulty = f"s3://{s3_bucket}/clean", f"s3://{s3_bucket}/faulty"
    assert main(_s3_argv(src, clean)) == 0
    s3_proxy.chaos(0.2, seed=3, latency_s=0.2)
    try:
        assert main(_s3_argv(src, faulty)) == 0
    finally:
        faults = dict(s3_proxy.faults)
        s3_proxy.heal()
    assert min(faults.values()) >= 1, faults  # each kind of fault happened
    a, b = (storage.read_json(storage.join(o, "summary.json")) for o in (clean, faulty))
    assert (b["videos_ok"], b["videos_failed"], b["retryable"]) == (4, 0, 0)
    assert (a["clips"], a["files"]) == (b["clips"], b["files"])
    for f in a["files"]:
        assert storage.read_bytes(storage.join(clean, f)) == storage.read_bytes(storage.join(faulty, f)), f
    assert not storage.exists(storage.join(faulty, "errors.parquet"))


def test_awkward_inputs_become_error_rows_with_reasons_and_cut_downloads_are_flagged(ray_local, tmp_path, capsys):
    from bad_inputs import EXPECTED, MAX_PIXELS, manifest, write_bad_inputs

    videos = write_bad_inputs(tmp_path / "in")
    out = str(tmp_path / "out")
    assert main(["--manifest", manifest(tmp_path / "in", videos), "--output", out, "--num-frames", "4",
                 "--sampling-rate", "4", "--short-side", "32", "--sampling", "cover", "--memory-mb", "64",
                 "--max-pixels", str(MAX_PIXELS)]) == 0
    errors = {os.path.basename(e["uri"]).split(".")[0]: e for e in
              storage.read_parquet(os.path.join(out, "errors.parquet")).to_pylist()}
    assert set(errors) == {name for name, words in EXPECTED.items() if words}
    for name, e in errors.items():
        assert EXPECTED[name] in e["error"] and e["stage"] == "probe", e
    rows = ray.data.read_parquet(os.path.join(out, "clips")).take_all()
    flags = {r["video_id"]: r["truncated"] for r in rows}
    assert flags == {"good": False, "truncated": True}
    assert "2/6 videos ok, 4 failed" in capsys.readouterr().out


def test_user_errors_exit_2_before_ray(user_error, corpus, tmp_path):
    out = tmp_path / "out"
    man = os.path.join(corpus, "train.csv")
    user_error(main, ["--manifest", tmp_path / "none.csv", "--output", out], "--manifest")
    (tmp_path / "noise.csv").write_bytes(bytes(range(256)) * 8)
    user_error(main, ["--manifest", tmp_path / "noise.csv", "--output", out], "--manifest")
    (tmp_path / "noise.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 8)
    user_error(main, ["--manifest", tmp_path / "noise.parquet", "--output", out], "--manifest")
    (tmp_path / "nopath.csv").write_text("foo,bar\n1,2\n")
    user_error(main, ["--manifest", tmp_path / "nopath.csv", "--output", out], "no usable rows")
    user_error(main, ["--manifest", man, "--output", out, "--rows-per-shard", "-1"], "--rows-per-shard")
    user_error(main, ["--manifest", man, "--output", out, "--shard-mb", ".nan"], "finite")
    other = tmp_path / "preds"  # another job's output folder
    other.mkdir()
    (other / "predictions.parquet").write_bytes(b"PAR1")
    user_error(main, ["--manifest", man, "--output", other], "did not write")
