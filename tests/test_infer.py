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

from pipeline import storage
from pipeline.aggregate import label_at
from pipeline.data import synthetic
from pipeline.data.manifest import LabelMap, write_labels
from pipeline.infer import (SCHEMA, ClipSpec, InferConfig, error_row, list_parts, merge_parts,
                            part_name, video_clips, write_part)

REPO = Path(__file__).resolve().parents[1]
FPS = 15
SIZE = (96, 72)  # W, H of the synthetic videos
CLIP = dict(num_frames=4, sampling_rate=8, short_side=32, crop_size=32)  # 16 source frames ~ 1.07 s
CLIP_ARGS = ["--sampling-rate", "8", "--short-side", "32", "--crop-size", "32"]


# ----------------------------------------------------------------------------- fixtures


def _save_with_labels(model, folder: Path) -> str:
    from pipeline.model import save

    folder.mkdir(parents=True, exist_ok=True)
    save(model, str(folder / "model.pt"))
    write_labels(str(folder / "labels.json"), LabelMap(tuple(synthetic.CLASSES)))
    return str(folder / "model.pt")


@pytest.fixture(scope="session")
def untrained_ckpt(tmp_path_factory) -> str:
    """A random debug TimeSformer (4 classes, 4 frames of 32 px) with labels.json beside it."""
    import torch

    from pipeline.model import create

    torch.manual_seed(0)
    return _save_with_labels(create("debug", num_classes=4), tmp_path_factory.mktemp("untrained"))


@pytest.fixture(scope="session")
def short_videos(tmp_path_factory) -> list[str]:
    """Six 3 s motion videos (plain H.264 MP4)."""
    d = tmp_path_factory.mktemp("short")
    paths = []
    for i in range(6):
        p = str(d / f"clip{i}.mp4")
        synthetic.write_motion_video(p, i % 4, seconds=3, fps=FPS, size=SIZE, seed=i)
        paths.append(p)
    return paths


SEGMENT_SECONDS = 15.0
LONG_PLANS = {  # video -> segment labels (60-75 s in total); the majority differs per video
    "long_a": ["left", "up", "left", "left"],
    "long_b": ["down", "right", "down", "down", "up"],
    "long_c": ["up", "up", "right", "up"],
}


@pytest.fixture(scope="session")
def long_videos(tmp_path_factory) -> dict[str, str]:
    """Three >= 60 s synthetic videos made of 15 s segments of known motion: id -> path."""
    d = tmp_path_factory.mktemp("long")
    paths = {}
    for i, (vid, labels) in enumerate(LONG_PLANS.items()):
        paths[vid] = str(d / f"{vid}.mp4")
        synthetic.write_long_video(paths[vid], [synthetic.CLASSES.index(x) for x in labels],
                                   segment_seconds=SEGMENT_SECONDS, fps=FPS, size=SIZE, seed=500 + i)
    return paths


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory) -> str:
    """A debug TimeSformer trained in-process (plain torch loop, ~25 s) on 96 separate short
    motion videos (6 clips each), with the from-scratch init of configs/debug.yaml. It never sees
    the long videos; measured on them: 87-100 % of the clips inside a segment right."""
    import torch
    import torch.nn.functional as F

    from pipeline.model.forward import to_model_input
    from pipeline.model import create

    d = tmp_path_factory.mktemp("train_videos")
    xs, ys = [], []
    for i in range(96):
        path = str(d / f"train{i}.mp4")
        synthetic.write_motion_video(path, i % 4, seconds=3, fps=FPS, size=SIZE, seed=1000 + i)
        _, clips = video_clips(path, ClipSpec(cover=False, clips=6, crops=1, **CLIP))
        xs += list(clips[:, 0])
        ys += [i % 4] * len(clips)
    x_all, y_all = torch.from_numpy(np.stack(xs)), torch.tensor(ys)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = create("debug", num_classes=4, linear_init_std=0.1, time_embed_init_std=1.0, temporal_fc_init_std=0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(600):
        idx = torch.randint(0, len(x_all), (16,), generator=g)
        loss = F.cross_entropy(model(to_model_input(x_all[idx])), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return _save_with_labels(model, tmp_path_factory.mktemp("trained"))


def _rows(output: str) -> list[dict]:
    return pq.read_table(os.path.join(output, "predictions.parquet")).to_pylist()


def _run_job(ckpt: str, videos: str, output: str, *extra: str) -> int:
    from jobs.infer import main

    return main(["--checkpoint", ckpt, "--videos", videos, "--output", output, *CLIP_ARGS, *extra])


def _manifest(path: Path, rows: list[tuple]) -> str:
    """A CSV manifest of (path, video_id) or (path, video_id, label) rows."""
    header = "path,video_id" + (",label" if rows and len(rows[0]) == 3 else "")
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return str(path)


# ----------------------------------------------------------------------------- pure pieces


def test_video_clips_cover_the_video_without_overlap(short_videos):
    spec = ClipSpec(cover=True, clips=1, crops=1, **CLIP)
    meta, clips = video_clips(short_videos[0], spec)
    k = len(meta["starts"])
    assert k == int(np.ceil(45 / 16))  # 3 s at 15 fps, 16-frame clips
    assert clips.shape == (k, 1, 4, 32, 32, 3) and clips.dtype == np.uint8
    assert meta["starts"][0] == 0.0
    assert meta["ends"][-1] == pytest.approx(3.0)
    assert all(a == pytest.approx(b) for a, b in zip(meta["ends"][:-1], meta["starts"][1:]))


def test_video_clips_uniform_three_crops_differ(short_videos):
    spec = ClipSpec(cover=False, clips=2, crops=3, **{**CLIP, "short_side": 40})
    meta, clips = video_clips(short_videos[1], spec)
    assert clips.shape == (2, 3, 4, 32, 32, 3)
    assert not np.array_equal(clips[0, 0], clips[0, 2])  # left and right crops of a 53x40 frame


def test_part_names_depend_only_on_the_set_of_ids():
    assert part_name(["b", "a"]) == part_name(["a", "b"])
    assert part_name(["a"]) != part_name(["a", "b"])
    assert part_name(["x"]).startswith("part-") and part_name(["x"]).endswith(".parquet")


def _ok_row(vid: str, label: str = "left") -> dict:
    row = error_row(vid, f"/v/{vid}.mp4", "", "")
    row.update(status="ok", stage=None, error=None, label=label, label_id=0, score=0.9,
               num_clips=1, duration=1.0, fps=15.0, top_labels=[label], top_ids=[0], top_scores=[0.9],
               timeline=[{"start_sec": 0.0, "end_sec": 1.0, "scores": [0.9, 0.1]}])
    return row


def test_merge_keeps_one_row_per_video_ok_over_error(tmp_path):
    out = str(tmp_path / "out")
    write_part(out, [error_row("a", "/v/a.mp4", "decode.open", "transient"), _ok_row("b")])
    write_part(out, [_ok_row("a"), error_row("c", "/v/c.mp4", "decode.open", "missing")])  # rerun
    write_part(out, [_ok_row("b", "up"), _ok_row("zzz")])  # b again; zzz is not in this input
    (tmp_path / "out" / "parts" / ".part-x.parquet.123.tmp").write_bytes(b"half written")
    assert len(list_parts(out)) == 3  # temporary files are not parts
    counts = merge_parts(out, ["a", "b", "c"], jsonl=True)
    rows = _rows(out)
    assert sorted(r["video_id"] for r in rows) == ["a", "b", "c"]
    assert {r["video_id"]: r["status"] for r in rows} == {"a": "ok", "b": "ok", "c": "error"}
    assert counts == {"rows": 3, "ok": 2, "errors": 1, "with_target": 0, "correct": 0}
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["video_id"] for x in lines) == ["a", "b", "c"]
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    assert errors == [{"uri": "/v/c.mp4", "stage": "decode.open", "error": "missing"}]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="crops"):
        InferConfig(crops=2)
    with pytest.raises(ValueError, match="aggregate"):
        InferConfig(aggregate="median")
    with pytest.raises(ValueError, match="short_side"):
        InferConfig(short_side=16, crop_size=32)


# ----------------------------------------------------------------------------- the job on Ray


def test_bad_videos_become_error_rows_and_exit_zero(ray_local, untrained_ckpt, short_videos, tmp_path):
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
    rows = {r["video_id"]: r for r in _rows(out)}
    assert sorted(rows) == ["corrupt", "empty", "good", "missing", "truncated"]
    assert rows["good"]["status"] == "ok" and rows["good"]["num_clips"] == 3
    for vid in ("corrupt", "missing", "empty"):
        assert rows[vid]["status"] == "error" and rows[vid]["stage"].startswith("decode.")
        assert rows[vid]["error"] and rows[vid]["label"] is None and rows[vid]["timeline"] == []
    assert "not found" in rows["missing"]["error"]
    assert "0 bytes" in rows["empty"]["error"]
    # a truncated file either decodes what is there or is an error row with a reason; never a crash
    assert rows["truncated"]["status"] in ("ok", "error")
    errors = pq.read_table(os.path.join(out, "errors.parquet")).to_pylist()
    assert {e["uri"] for e in errors} >= {str(corrupt), str(tmp_path / "missing.mp4"), str(empty)}
    assert all(e["stage"] and e["error"] for e in errors)


def test_output_schema_jsonl_plots_and_summary(ray_local, untrained_ckpt, short_videos, tmp_path):
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
    assert json.loads(Path(out, "labels.json").read_text())["names"] == synthetic.CLASSES


def test_uniform_clips_three_crops_and_in_flight_bounds(ray_local, untrained_ckpt, short_videos, tmp_path):
    import ray

    from pipeline.infer import run_inference

    items = [{"video_id": f"v{i}", "uri": p, "target": None} for i, p in enumerate(short_videos)]
    cfg = InferConfig(cover=False, clips=2, crops=3, batch_size=5, max_videos_in_flight=1,
                      max_batches_per_actor=1, part_size=4, **CLIP)
    res = run_inference(untrained_ckpt, items, str(tmp_path / "out"), cfg)
    assert (res.total, res.ok, res.errors, res.clips) == (6, 6, 0, 12)
    assert res.parts_written == 2  # 4 + 2 videos
    assert res.peak_videos_in_flight == 1 and res.peak_batches_per_actor == 1  # the bounds held
    assert all(r["num_clips"] == 2 for r in _rows(str(tmp_path / "out")))
    assert ray.is_initialized()  # the job reused the session's Ray


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
           "--max-videos-in-flight", "2", *CLIP_ARGS]
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
    rows = _rows(str(out))
    assert sorted(r["video_id"] for r in rows) == sorted(ids)  # each exactly once
    assert all(r["status"] == "ok" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["skipped"] >= len(done_before)  # not recomputed
    assert summary["counts"]["processed"] == len(ids) - summary["counts"]["skipped"]


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
    assert _run_job(trained_ckpt, man, out, "--cover", "--batch-size", "16", "--plot") == 0
    rows = {r["video_id"]: r for r in _rows(out)}
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
    rows = {r["video_id"]: r for r in _rows(out)}
    assert {v: (r["status"], r["target"]) for v, r in rows.items()} == {
        "clip0": ("ok", "3"), "clip1": ("ok", "1"), "not_there": ("error", "2")}
