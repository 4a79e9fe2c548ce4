"""`python -m jobs.explain` end to end on a real local Ray with real PyAV-encoded videos."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.data import errors, synthetic
from pipeline.explain.tsne import silhouette

DECODE_STAGES = set(errors.STAGES) - {errors.MANIFEST, errors.MODEL}  # the video failed before the model
CLIP = dict(num_frames=4, sampling_rate=8, short_side=32, crop_size=32, sampling="uniform", clips=2, crops=1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    """A random debug TimeSformer whose recipe is 2 uniform clips of 4 frames x 32 px."""
    import torch

    from pipeline.model import create, save
    from pipeline.model.recipe import make_recipe

    torch.manual_seed(0)
    model = create("debug", num_classes=4)
    path = str(tmp_path_factory.mktemp("ckpt") / "model.pt")
    save(model, path, recipe=make_recipe(CLIP, model.config, labels=synthetic.CLASSES))
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    """4 good videos (2 left, 2 right; one with an id that climbs out), a corrupt one, a missing one."""
    d = tmp_path_factory.mktemp("videos")
    rows = []
    for i, vid in enumerate(["a/0", "a/1", "b", "../escape"]):
        path = d / f"v{i}.mp4"
        synthetic.write_motion_video(str(path), i % 2, seconds=2, fps=15, size=(96, 72), seed=i)
        rows.append(f"{path},{vid},{synthetic.CLASSES[i % 2]}")
    (d / "corrupt.mp4").write_bytes(b"not a video" * 50)
    rows += [f"{d / 'corrupt.mp4'},corrupt,left", f"{d / 'missing.mp4'},missing,right"]
    (d / "m.csv").write_text("path,video_id,label\n" + "\n".join(rows) + "\n")
    return str(d / "m.csv")


def test_maps_features_tsne_and_error_rows(ray_local, ckpt, manifest, tmp_path, capsys):
    from jobs.explain import main

    out = tmp_path / "out"
    assert main(["--checkpoint", ckpt, "--videos", manifest, "--output", str(out)]) == 0
    rows = {r["video_id"]: r for r in pq.read_table(out / "features.parquet").to_pylist()}
    assert sorted(rows) == ["../escape", "a/0", "a/1", "b", "corrupt", "missing"]
    for vid in ("corrupt", "missing"):
        assert rows[vid]["status"] == "error" and rows[vid]["stage"] in DECODE_STAGES
        assert rows[vid]["error"] and rows[vid]["embedding"] is None
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 4 and all(len(r["embedding"]) == 64 and r["num_clips"] == 2 for r in ok)
    assert rows["a/0"]["label"] == "left" and rows["a/1"]["label"] == "right"
    maps = sorted(p.relative_to(out / "maps").as_posix() for p in (out / "maps").rglob("*.npy"))
    assert len(maps) == 4 and "a/0.npy" in maps and "b.npy" in maps  # "../escape" stays inside maps/
    for name in maps:
        m = np.load(out / "maps" / name)
        assert m.shape == (4, 4, 4) and m.dtype == np.float32 and (m >= 0).all()
        assert abs(float(m.sum()) - 1.0) < 1e-5
        assert (out / "maps" / name.replace(".npy", ".png")).stat().st_size > 1000
    assert (out / "tsne.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    expected = silhouette(np.array([r["embedding"] for r in ok]), [r["label"] for r in ok])
    assert summary["silhouette"] == pytest.approx(expected)
    assert summary["counts"] == {"videos": 6, "ok": 4, "errors": 2}
    assert summary["recipe"]["used"]["clips"] == 2
    assert f"silhouette of the features by label: {expected:.3f}" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing_checkpoint", "missing_videos", "bad_clips", "foreign_output"])
def test_user_errors_exit_2_before_ray(case, ckpt, manifest, tmp_path, monkeypatch, capsys):
    import ray

    from jobs.explain import main

    def no_ray(*a, **k):
        raise AssertionError("Ray started")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    out = tmp_path / "out"
    args = {"checkpoint": ckpt, "videos": manifest, "output": str(out)}
    extra: list[str] = []
    if case == "missing_checkpoint":
        args["checkpoint"] = str(tmp_path / "nope.pt")
    elif case == "missing_videos":
        args["videos"] = str(tmp_path / "nope.csv")
    elif case == "bad_clips":
        extra = ["--clips", "0"]
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    argv = [x for k, v in args.items() for x in (f"--{k}", v)] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert case == "foreign_output" or not out.exists()
