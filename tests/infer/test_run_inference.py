"""Long-video inference end to end on a real local Ray with real PyAV-encoded videos.

- a debug TimeSformer trained here (plain torch loop, ~25 s) on short synthetic motion videos
  classifies unseen >= 60 s videos of known segments: the video label is the majority segment
  label and the per-clip timeline follows the segments;
- a job killed midway (SIGKILL of a real `python -m jobs.infer` process) and rerun gives every
  video exactly once;
- missing / corrupt / empty videos become error rows, exit code 0;
- the output schema, JSONL, plots, uniform clips + three crops, S3 input and output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from infer_cases import CLIP, CLIP_ARGS, FPS, LONG_PLANS, SEGMENT_SECONDS, read_rows

from pipeline import storage
from pipeline.aggregate import label_at
from pipeline.data import synthetic
from pipeline.infer import SCHEMA, ClipOverrides, InferConfig

REPO = Path(__file__).resolve().parents[2]


def _run_job(ckpt: str, videos: str, output: str, *extra: str) -> int:
    from jobs.infer import main

    return main(["--checkpoint", ckpt, "--videos", videos, "--output", output, *CLIP_ARGS, *extra])


def _manifest(path: Path, rows: list[tuple]) -> str:
    """A CSV manifest of (path, video_id) or (path, video_id, label) rows."""
    header = "path,video_id" + (",label" if rows and len(rows[0]) == 3 else "")
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return str(path)


def test_bad_videos_become_error_rows_and_exit_zero(ray_local, untrained_ckpt, short_videos, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not really a video" * 20)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    data = Path(short_videos[0]).read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    man = _manifest(tmp_path / "m.csv", [(short_videos[0], "good"), (str(corrupt), "corrupt"),
                                          (str(tmp_path / "missing.mp4"), "missing"),
                                          (str(empty), "empty"), (str(truncated), "truncated")])
    out = str(tmp_path / "out")
    assert _run_job(untrained_ckpt, man, out, "--batch-size", "4") == 0
    rows = {r["video_id"]: r for r in read_rows(out)}
    assert sorted(rows) == ["corrupt", "empty", "good", "missing", "truncated"]
    assert rows["good"]["status"] == "ok" and rows["good"]["num_clips"] == 3
    for vid in ("corrupt", "missing", "empty"):
        assert rows[vid]["status"] == "error" and rows[vid]["stage"] in ("open", "probe")
        assert rows[vid]["error"] and rows[vid]["label"] is None and rows[vid]["timeline"] == []
    assert "not found" in rows["missing"]["error"]
    assert "0 bytes" in rows["empty"]["error"]
    # a truncated file either decodes what is there or is an error row with a reason; never a crash
    assert rows["truncated"]["status"] in ("ok", "error")
    errors = pq.read_table(os.path.join(out, "errors.parquet")).to_pylist()
    assert {e["uri"] for e in errors} >= {str(corrupt), str(tmp_path / "missing.mp4"), str(empty)}
    assert all(e["stage"] and e["error"] for e in errors)
    printed = capsys.readouterr().out  # the reasons on the console, by kind, with an example each
    kinds = [line for line in printed.splitlines() if " x " in line and " e.g. " in line]
    assert len(kinds) >= 2 and any(" x open: " in line and "not found" in line for line in kinds), printed


def test_output_schema_jsonl_plots_and_summary(ray_local, untrained_ckpt, short_videos, tmp_path, capsys):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    for i, p in enumerate(short_videos[:3]):
        dst = folder / ("sub" if i == 2 else "") / Path(p).name
        dst.write_bytes(Path(p).read_bytes())
    out = str(tmp_path / "out")
    assert _run_job(untrained_ckpt, str(folder), out, "--jsonl", "--plot", "--top-k", "3") == 0
    table = pq.read_table(os.path.join(out, "predictions.parquet"))
    assert table.schema.equals(SCHEMA)
    rows = table.to_pylist()
    assert sorted(r["video_id"] for r in rows) == ["clip0", "clip1", "sub/clip2"]
    for r in rows:
        assert r["status"] == "ok" and r["error"] is None
        assert r["duration"] == pytest.approx(3.0) and r["num_clips"] == 3 == len(r["timeline"])
        assert r["top_labels"][0] == r["label"] in synthetic.CLASSES and len(r["top_labels"]) == 3
        assert r["top_scores"] == sorted(r["top_scores"], reverse=True)
        assert r["label_id"] == synthetic.CLASSES.index(r["label"])
        starts = [c["start_sec"] for c in r["timeline"]]
        assert starts == sorted(starts) and starts[0] == 0.0
        assert all(len(c["scores"]) == 4 and sum(c["scores"]) == pytest.approx(1, abs=1e-4)
                   for c in r["timeline"])
        png = Path(out, "plots", r["video_id"] + ".png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    jsonl = [json.loads(x) for x in Path(out, "predictions.jsonl").read_text().splitlines()]
    assert {r["video_id"]: r["label"] for r in jsonl} == {r["video_id"]: r["label"] for r in rows}
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["counts"]["videos"] == 3 and summary["counts"]["ok"] == 3 and summary["clips"] == 9
    # the checkpoint predates recipes: the documented defaults, and the flag that differs from them
    assert summary["recipe"]["overrides"] == {"sampling_rate": {"recipe": 32, "used": 8}}
    assert summary["clip_spec"]["sampling_rate"] == 8 and summary["clip_spec"]["sampling"] == "cover"
    captured = capsys.readouterr()
    err = captured.err
    assert "warning: the checkpoint records no clip recipe" in err
    assert "warning: --clip.sampling-rate 8 (given) differs from the checkpoint's recipe (32); using 8" in err
    assert json.loads(Path(out, "labels.json").read_text())["names"] == synthetic.CLASSES
    progress = json.loads(Path(out, "progress.json").read_text())
    assert progress["finished"] and progress["videos_done"] == progress["videos_total"] == 3
    assert "[infer] videos 3/3 | " in captured.out


def test_uniform_clips_three_crops_and_batches_across_videos(ray_local, untrained_ckpt, short_videos, tmp_path):
    import ray

    from pipeline.infer import run_inference

    items = [{"video_id": f"v{i}", "uri": p, "target": None} for i, p in enumerate(short_videos)]
    cfg = InferConfig(clip=ClipOverrides(sampling="uniform", clips=2, crops=3, **CLIP), batch_size=5, part_size=4)
    res = run_inference(untrained_ckpt, items, str(tmp_path / "out"), cfg)
    assert (res.total, res.ok, res.errors, res.clips) == (6, 6, 0, 12)
    assert res.parts_written == 2  # 4 + 2 videos
    assert all(r["num_clips"] == 2 for r in read_rows(str(tmp_path / "out")))
    assert ray.is_initialized()  # the job reused the session's Ray


def test_a_dead_model_actor_loses_no_video(ray_local, untrained_ckpt, short_videos, tmp_path):
    """The actor's process exits in the middle of the run: Ray Data restarts it and runs its batch
    again, so every video still gets its prediction, once, with the clean run's labels."""
    from pipeline.infer import run_inference

    items = [{"video_id": f"v{i}", "uri": p, "target": None} for i, p in enumerate(short_videos)]
    run_inference(untrained_ckpt, items, str(tmp_path / "clean"),
                  InferConfig(clip=ClipOverrides(sampling="uniform", clips=2, **CLIP), batch_size=2))
    cfg = InferConfig(clip=ClipOverrides(sampling="uniform", clips=2, **CLIP), batch_size=2, fail_actor_after_calls=2)
    out = tmp_path / "out"
    res = run_inference(untrained_ckpt, items, str(out), cfg)
    assert (out / "_fault_injected").exists()  # the actor did die
    assert (res.total, res.ok, res.errors, res.clips) == (6, 6, 0, 12)
    rows, ref = ({r["video_id"]: r for r in read_rows(str(o))} for o in (out, tmp_path / "clean"))
    assert sorted(rows) == [f"v{i}" for i in range(6)]
    assert {v: r["label"] for v, r in rows.items()} == {v: r["label"] for v, r in ref.items()}


def test_with_no_model_actor_left_every_video_still_gets_one_row(ray_local, untrained_ckpt, short_videos, tmp_path):
    """The only actor dies with no restarts left: Ray Data ends the run, and the videos not scored
    become retryable `model` error rows saying why (no wait on an actor that will not come back)."""
    from pipeline.infer import run_inference

    items = [{"video_id": f"v{i}", "uri": p, "target": None} for i, p in enumerate(short_videos)]
    cfg = InferConfig(clip=ClipOverrides(sampling="uniform", clips=2, **CLIP), batch_size=2, actor_restarts=0,
                      fail_actor_after_calls=2)
    res = run_inference(untrained_ckpt, items, str(tmp_path / "out"), cfg)
    rows = read_rows(str(tmp_path / "out"))
    assert sorted(r["video_id"] for r in rows) == [f"v{i}" for i in range(6)] and res.errors >= 5
    assert all(r["stage"] == "model" and "model actors failed" in r["error"] for r in rows if r["status"] == "error")


def test_s3_videos_and_outputs(ray_local, s3_bucket, untrained_ckpt, short_videos):
    for p in short_videos[:2]:
        storage.write_bytes_atomic(f"s3://{s3_bucket}/in/{Path(p).name}", Path(p).read_bytes())
    storage.write_bytes_atomic(f"s3://{s3_bucket}/in/broken.mp4", b"garbage" * 100)
    ckpt = f"s3://{s3_bucket}/ckpt/model.pt"
    storage.write_bytes_atomic(ckpt, Path(untrained_ckpt).read_bytes())
    storage.write_bytes_atomic(f"s3://{s3_bucket}/ckpt/labels.json",
                               Path(untrained_ckpt).with_name("labels.json").read_bytes())
    out = f"s3://{s3_bucket}/out"
    assert _run_job(ckpt, f"s3://{s3_bucket}/in", out, "--jsonl") == 0
    rows = storage.read_parquet(f"{out}/predictions.parquet").to_pylist()
    assert {r["video_id"]: r["status"] for r in rows} == {"clip0": "ok", "clip1": "ok", "broken": "error"}
    assert all(r["uri"].startswith(f"s3://{s3_bucket}/in/") for r in rows)
    assert all(r["label"] in synthetic.CLASSES for r in rows if r["status"] == "ok")
    assert storage.exists(f"{out}/predictions.jsonl") and storage.exists(f"{out}/errors.parquet")


def test_a_storage_outage_is_a_retryable_row_and_a_rerun_scores_the_video(ray_local, s3_bucket, s3_proxy,
                                                                          untrained_ckpt, short_videos):
    for p in short_videos[:2]:
        storage.write_bytes_atomic(f"s3://{s3_bucket}/in/{Path(p).name}", Path(p).read_bytes())
    out = f"s3://{s3_bucket}/out"
    s3_proxy.fail(503, path_contains="/in/clip")  # every video read answers 503: a full outage
    try:
        assert _run_job(untrained_ckpt, f"s3://{s3_bucket}/in", out, "--clip.storage-attempts", "2",
                        "--clip.storage-backoff-s", "0.1", "--storage-outage-s", "2") == 0
    finally:
        s3_proxy.heal()
    rows = {r["video_id"]: r for r in storage.read_parquet(f"{out}/predictions.parquet").to_pylist()}
    assert {v: (r["status"], r["stage"]) for v, r in rows.items()} == {
        "clip0": ("error", "storage"), "clip1": ("error", "storage")}
    assert _run_job(untrained_ckpt, f"s3://{s3_bucket}/in", out) == 0  # storage is back
    rows = {r["video_id"]: r["status"] for r in storage.read_parquet(f"{out}/predictions.parquet").to_pylist()}
    assert rows == {"clip0": "ok", "clip1": "ok"}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_an_outage_longer_than_every_videos_tries_costs_no_rerun(s3_bucket, s3_proxy, untrained_ckpt, short_videos):
    """Every video GET answers 503 for 15 s from the first read, far past each video's own tries (2 tries 0.1 s apart,
    the S3 client's own retries off): the readers notice the store is down, wait on one shared
    backoff, say so, and go on when it answers, so every video is classified in the one run. The
    job runs as its own driver with its own local Ray, whose workers inherit the client settings."""
    import threading

    for p in short_videos[:4]:
        storage.write_bytes_atomic(f"s3://{s3_bucket}/out_in/{Path(p).name}", Path(p).read_bytes())
    out = f"s3://{s3_bucket}/outage_out"
    cmd = [sys.executable, "-m", "jobs.infer", "--checkpoint", untrained_ckpt, "--videos", f"s3://{s3_bucket}/out_in",
           "--output", out, *CLIP_ARGS, "--clip.storage-attempts", "2", "--clip.storage-backoff-s", "0.1",
           "--storage-outage-s", "120"]
    env = {**os.environ, "RAY_ADDRESS": "local", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
           "PYTHONPATH": str(REPO)}
    s3_proxy.fail(503, path_contains="/out_in/clip")
    before, done = s3_proxy.failed, threading.Event()

    def heal_15_s_after_the_first_failed_read() -> None:
        while s3_proxy.failed == before and not done.wait(0.1):
            pass
        done.wait(15.0)
        s3_proxy.heal()

    healer = threading.Thread(target=heal_15_s_after_the_first_failed_read, daemon=True)
    healer.start()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=360)
    finally:
        done.set()
        s3_proxy.heal()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["video_id"]: r["status"] for r in storage.read_parquet(f"{out}/predictions.parquet").to_pylist()}
    assert rows == {f"clip{i}": "ok" for i in range(4)}
    assert proc.stdout.count("[infer] storage unavailable (") == 1  # said once ...
    assert "every reader waits on one shared backoff" in proc.stdout
    assert proc.stdout.count("[infer] storage answers again after") == 1  # ... and once when it was back


def test_at_20_percent_storage_faults_the_predictions_are_a_clean_runs(ray_local, s3_bucket, s3_proxy,
                                                                      untrained_ckpt, short_videos):
    """503s, reset connections and delays on a fifth of all requests (videos, checkpoint, parts,
    outputs): retried, so every video is scored once, as in a clean run."""
    for p in short_videos[:4]:
        storage.write_bytes_atomic(f"s3://{s3_bucket}/in/{Path(p).name}", Path(p).read_bytes())
    clean, faulty = f"s3://{s3_bucket}/clean", f"s3://{s3_bucket}/faulty"
    args = ("--clip.storage-backoff-s", "0.1", "--part-size", "1")
    assert _run_job(untrained_ckpt, f"s3://{s3_bucket}/in", clean, *args) == 0
    s3_proxy.chaos(0.2, seed=4, latency_s=0.2)
    try:
        assert _run_job(untrained_ckpt, f"s3://{s3_bucket}/in", faulty, *args) == 0
    finally:
        faults = dict(s3_proxy.faults)
        s3_proxy.heal()
    assert min(faults.values()) >= 1, faults  # each kind of fault happened
    a, b = ({r["video_id"]: r for r in storage.read_parquet(f"{o}/predictions.parquet").to_pylist()}
            for o in (clean, faulty))
    assert sorted(b) == ["clip0", "clip1", "clip2", "clip3"] and all(r["status"] == "ok" for r in b.values())
    for vid, row in a.items():
        scores = [c["scores"] for c in row["timeline"]]
        np.testing.assert_allclose(scores, [c["scores"] for c in b[vid]["timeline"]], atol=1e-5)
        same = {k: v for k, v in row.items() if k not in ("timeline", "score", "top_scores")}
        assert same == {k: b[vid][k] for k in same}


@pytest.mark.slow
def test_killed_job_rerun_gives_every_video_exactly_once(ray_local, untrained_ckpt, short_videos, tmp_path):
    """SIGKILL a real `python -m jobs.infer` driver after its first part file, then rerun."""
    folder = tmp_path / "videos"
    folder.mkdir()
    ids = []
    for rep in range(2):
        for p in short_videos:
            name = f"r{rep}_{Path(p).name}"
            (folder / name).write_bytes(Path(p).read_bytes())
            ids.append(Path(name).stem)
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "jobs.infer", "--checkpoint", untrained_ckpt, "--videos", str(folder),
           "--output", str(out), "--part-size", "1", "--batch-size", "2",
           *CLIP_ARGS]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    parts_dir = out / "parts"
    while time.monotonic() < deadline and proc.poll() is None:
        if parts_dir.exists() and any(p.name.startswith("part-") for p in parts_dir.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"job ended before it could be killed:\n{proc.stdout.read().decode()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "predictions.parquet").exists()  # it really died midway
    done_before = {r["video_id"] for p in parts_dir.glob("part-*.parquet") for r in pq.read_table(p).to_pylist()}
    assert 1 <= len(done_before) < len(ids)

    from jobs.infer import main

    assert main(["--checkpoint", untrained_ckpt, "--videos", str(folder), "--output", str(out),
                 "--part-size", "3", *CLIP_ARGS]) == 0
    rows = read_rows(str(out))
    assert sorted(r["video_id"] for r in rows) == sorted(ids)  # each exactly once
    assert all(r["status"] == "ok" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["skipped"] >= len(done_before)  # not recomputed
    assert summary["this_run"]["processed"] == len(ids) - summary["this_run"]["skipped"]
    assert summary["counts"] == {"videos": len(ids), "ok": len(ids), "errors": 0}  # the whole folder
    assert summary["clips"] == sum(r["num_clips"] for r in rows)
    assert main(["--checkpoint", untrained_ckpt, "--videos", str(folder), "--output", str(out),
                 "--part-size", "3", *CLIP_ARGS]) == 0  # everything done: nothing to do
    again = json.loads((out / "summary.json").read_text())
    assert again["counts"] == summary["counts"] and again["clips"] == summary["clips"]  # still the folder's
    assert (again["this_run"]["processed"], again["this_run"]["clips"]) == (0, 0)


@pytest.mark.slow
def test_trained_model_follows_the_segments_of_long_videos(ray_local, trained_ckpt, long_videos, tmp_path):
    majority = {vid: max(set(labels), key=labels.count) for vid, labels in LONG_PLANS.items()}
    man = tmp_path / "long.jsonl"  # with the known segments, which the plots draw
    man.write_text("".join(json.dumps({
        "path": p, "video_id": vid, "label": majority[vid],
        "segments": [[k * SEGMENT_SECONDS, (k + 1) * SEGMENT_SECONDS, lab] for k, lab in enumerate(LONG_PLANS[vid])],
    }) + "\n" for vid, p in long_videos.items()))
    man = str(man)
    out = str(tmp_path / "out")
    assert _run_job(trained_ckpt, man, out, "--clip.sampling", "cover", "--batch-size", "16", "--plot") == 0
    rows = {r["video_id"]: r for r in read_rows(out)}
    assert sorted(rows) == sorted(LONG_PLANS)
    agree_all = inside_all = 0
    for vid, labels in LONG_PLANS.items():
        r = rows[vid]
        majority = max(set(labels), key=labels.count)
        assert r["status"] == "ok"
        assert r["duration"] == pytest.approx(SEGMENT_SECONDS * len(labels), abs=0.1)
        assert r["num_clips"] == len(r["timeline"]) == int(np.ceil(r["duration"] * FPS / 16))
        assert r["label"] == majority, (vid, r["top_labels"], r["top_scores"])
        segments = [[k * SEGMENT_SECONDS, (k + 1) * SEGMENT_SECONDS, lab] for k, lab in enumerate(labels)]
        agree = inside = 0
        for clip in r["timeline"]:
            truth = label_at(segments, clip["start_sec"])
            if truth != label_at(segments, clip["end_sec"] - 1e-6):
                continue  # a clip across a segment boundary has no single true label
            inside += 1
            agree += synthetic.CLASSES[int(np.argmax(clip["scores"]))] == truth
        assert inside >= 50
        assert agree / inside >= 0.65, f"{vid}: only {agree}/{inside} clips follow the segments"
        agree_all, inside_all = agree_all + agree, inside_all + inside
        assert Path(out, "plots", f"{vid}.png").stat().st_size > 5000
    assert agree_all / inside_all >= 0.8, f"only {agree_all}/{inside_all} clips follow the segments"
    assert json.loads(Path(out, "summary.json").read_text())["top1"] == 1.0  # label vs manifest


def test_howto100m_task_csv_with_a_path_template(ray_local, untrained_ckpt, short_videos, tmp_path):
    folder = Path(short_videos[0]).parent
    csv = tmp_path / "test.csv"
    csv.write_text("clip0,3\nclip1,1\nnot_there,2\n")  # the released files have no header
    out = str(tmp_path / "out")
    assert _run_job(untrained_ckpt, str(csv), out, "--howto100m-template", f"{folder}/{{video_id}}.mp4") == 0
    rows = {r["video_id"]: r for r in read_rows(out)}
    assert {v: (r["status"], r["target"]) for v, r in rows.items()} == {
        "clip0": ("ok", "3"), "clip1": ("ok", "1"), "not_there": ("error", "2")}


def test_awkward_inputs_are_error_rows_with_reasons_and_cut_downloads_are_flagged(ray_local, untrained_ckpt, tmp_path):
    from bad_inputs import EXPECTED, MAX_PIXELS, manifest, write_bad_inputs

    videos = write_bad_inputs(tmp_path / "in")
    out = str(tmp_path / "out")
    assert _run_job(untrained_ckpt, manifest(tmp_path / "in", videos), out, "--clip.max-pixels", str(MAX_PIXELS)) == 0
    rows = {r["video_id"]: r for r in read_rows(out)}
    assert sorted(rows) == sorted(EXPECTED)  # every input has its one row
    for name, words in EXPECTED.items():
        if words:
            assert rows[name]["status"] == "error" and words in rows[name]["error"], rows[name]
            assert rows[name]["stage"] == "probe"
        else:
            assert rows[name]["status"] == "ok"
    assert (rows["good"]["truncated"], rows["truncated"]["truncated"]) == (False, True)
    assert rows["truncated"]["duration"] < 0.5 * 120 / 25  # the prefix that decodes, not the header's
