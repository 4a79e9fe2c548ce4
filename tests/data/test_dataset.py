"""Ray Data clip datasets end to end on a real local Ray: shapes, labels, exact frames, seeds,
epochs, test views, the corrupt-file zoo, and videos + error table on S3 (moto on loopback).

The videos are lossless "index videos" (tests/conftest.py): every pixel of frame i has
R = i % 256, G = i // 256, values that survive resizing, cropping and flipping, so each output
clip tells exactly which source frames it holds.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_index_video
from pipeline import storage
from pipeline.data import sampling
from pipeline.data.dataset import build_clip_dataset
from pipeline.data.errors import collect_errors
from pipeline.data.rows import DecodeConfig

FPS = 30
SPAN = 16  # 4 frames x rate 4 at 30 fps
LENGTHS = {"v0": 90, "v1": 60, "v2": 45, "short": 10}  # "short" < one span: padded


def _cfg(**kw) -> DecodeConfig:
    return DecodeConfig(num_frames=4, sampling_rate=4, crop_size=32, batch_size=2,
                      memory=64 * 1024 * 1024, **kw)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[dict]:
    """Manifest rows of four lossless index videos (64x48, GOP 12), labels 0..3."""
    root = tmp_path_factory.mktemp("index_videos")
    rows = []
    for label, (vid, n) in enumerate(LENGTHS.items()):
        path = write_index_video(root / f"{vid}.mp4", num_frames=n, fps=FPS, gop=12, size=(64, 48))
        rows.append({"path": path, "label": label, "video_id": vid, "start_sec": None, "end_sec": None})
    return rows


def _indices(frames: np.ndarray) -> list[int]:
    """Source frame index of every frame of a clip [T, H, W, 3] (checks the frame is uniform)."""
    r = frames[..., 0].astype(np.int64)
    g = frames[..., 1].astype(np.int64)
    assert (r == r[:, :1, :1]).all() and (g == g[:, :1, :1]).all(), "frame is not an exact frame"
    return (r[:, 0, 0] + 256 * g[:, 0, 0]).tolist()


def _by_video(rows: list[dict]) -> dict[str, list[int]]:
    return {r["video_id"]: _indices(r["frames"]) for r in rows}


def test_train_clips_are_exact_with_metadata(ray_local, videos):
    out = build_clip_dataset(videos, _cfg(), mode="train", seed=0).take_all()
    assert sorted(r["video_id"] for r in out) == sorted(LENGTHS)
    labels = {r["video_id"]: r["label"] for r in videos}
    for r in out:
        assert r["frames"].shape == (4, 32, 32, 3) and r["frames"].dtype == np.uint8
        assert r["label"] == labels[r["video_id"]]
        assert (r["clip_index"], r["crop_index"], r["epoch"]) == (0, 0, 0)
        n = LENGTHS[r["video_id"]]
        start = round(r["start_sec"] * FPS)
        want, padded = sampling.clip_indices(start, start + SPAN, 4, n)
        assert _indices(r["frames"]) == want.tolist()  # exactly the sampled frames
        assert r["num_padded"] == padded
        assert r["end_sec"] == pytest.approx(min(start + SPAN, n) / FPS)
    short = next(r for r in out if r["video_id"] == "short")
    assert short["num_padded"] > 0 and _indices(short["frames"])[-1] == LENGTHS["short"] - 1


def test_train_clips_per_video_flow_as_rows_with_the_decode_work_of_their_video(ray_local, videos):
    out = build_clip_dataset(videos, _cfg(clips_per_video=3), mode="train", seed=0).take_all()
    for vid, n in LENGTHS.items():
        mine = sorted((r for r in out if r["video_id"] == vid), key=lambda r: r["clip_index"])
        assert [r["clip_index"] for r in mine] == [0, 1, 2]
        for r in mine:  # each an exact clip of its own span
            start = round(r["start_sec"] * FPS)
            assert _indices(r["frames"]) == sampling.clip_indices(start, start + SPAN, 4, n)[0].tolist()
        assert mine[0]["kept_frames"] > 0 and mine[0]["decoded_frames"] >= mine[0]["kept_frames"]
        assert all(r["kept_frames"] == r["decoded_frames"] == 0 for r in mine[1:])  # counted once per video


def test_seed_fixes_clips_and_epochs_change_them(ray_local, videos):
    cfg = _cfg()
    a = _by_video(build_clip_dataset(videos, cfg, mode="train", seed=7).take_all())
    b = _by_video(build_clip_dataset(videos, cfg, mode="train", seed=7).take_all())
    assert a == b
    other_seed = _by_video(build_clip_dataset(videos, cfg, mode="train", seed=8).take_all())
    assert other_seed != a

    multi = build_clip_dataset(videos, cfg, mode="train", seed=7, epochs=3).take_all()
    assert sorted(r["epoch"] for r in multi) == [0] * 4 + [1] * 4 + [2] * 4
    per_epoch = [_by_video([r for r in multi if r["epoch"] == e]) for e in range(3)]
    assert per_epoch[0] == a  # epoch 0 of a chained dataset == the single-epoch one
    assert per_epoch[1] != per_epoch[0] and per_epoch[2] != per_epoch[1]
    assert per_epoch[0]["v0"] != per_epoch[1]["v0"] or per_epoch[1]["v0"] != per_epoch[2]["v0"]
    # building epoch 2 on its own gives the same clips as epoch 2 of the chain
    alone = _by_video(build_clip_dataset(videos, cfg, mode="train", seed=7, epoch=2).take_all())
    assert alone == per_epoch[2]


def test_val_uniform_clips_times_three_crops(ray_local, videos):
    ds = build_clip_dataset(videos, _cfg(clips=2, crops=3), mode="val", seed=0,
                            materialize=True)
    out = ds.take_all()
    assert len(out) == 4 * 2 * 3
    for vid, n in LENGTHS.items():
        mine = [r for r in out if r["video_id"] == vid]
        assert sorted((r["clip_index"], r["crop_index"]) for r in mine) == [
            (k, c) for k in range(2) for c in range(3)]
        for (s, e), k in zip(sampling.uniform_clips(n, SPAN, 2), range(2)):
            crops = [r for r in mine if r["clip_index"] == k]
            want, _ = sampling.clip_indices(s, e, 4, n)
            assert all(_indices(r["frames"]) == want.tolist() for r in crops)
            # left / centre / right crops of a 43x32 frame are different windows
            blue = {r["crop_index"]: r["frames"][..., 2].tobytes() for r in crops}
            assert len(set(blue.values())) == 3
    assert ds.count() == 24  # materialized: counting does not decode again


def test_cover_clips_and_segments(ray_local, videos):
    cfg = _cfg(sampling="cover")
    v0 = next(r for r in videos if r["video_id"] == "v0")
    out = build_clip_dataset([v0], cfg, mode="test", seed=0).take_all()
    spans = sorted((round(r["start_sec"] * FPS), round(r["end_sec"] * FPS)) for r in out)
    assert spans == [(s, min(s + SPAN, 90)) for s in range(0, 90, SPAN)]  # 6 clips cover 90 frames

    segment = {**v0, "start_sec": 1.0, "end_sec": 2.0}  # frames [30, 60)
    out = build_clip_dataset([segment], cfg, mode="test", seed=0).take_all()
    assert len(out) == 2
    got = sorted(i for r in out for i in _indices(r["frames"]))
    assert got[0] == 30 and got[-1] <= 59
    assert min(r["start_sec"] for r in out) == pytest.approx(1.0)


def test_corrupt_zoo_lands_in_error_table(ray_local, videos, corrupt_videos, tmp_path):
    bad = [{"path": p, "label": 0, "video_id": name} for name, p in corrupt_videos.items()]
    error_uri = str(tmp_path / "errors")
    out = build_clip_dataset(videos + bad, _cfg(), mode="train", seed=0, error_uri=error_uri).take_all()
    assert sorted(r["video_id"] for r in out) == sorted(LENGTHS)  # every good video, once
    errors = collect_errors(error_uri).to_pylist()
    assert sorted(e["uri"] for e in errors) == sorted(corrupt_videos.values())
    for e in errors:
        assert e["stage"] in {"open", "stream", "probe", "seek", "decode", "index", "sample"}
        assert e["error"]
    stage = {e["uri"]: e["stage"] for e in errors}
    assert stage[corrupt_videos["missing"]] == "open"
    assert stage[corrupt_videos["audio_only"]] == "stream"


def test_videos_and_errors_on_s3(ray_local, videos, s3_bucket):
    rows = []
    for r in videos[:2]:
        uri = f"s3://{s3_bucket}/videos/{r['video_id']}.mp4"
        storage.write_bytes_atomic(uri, open(r["path"], "rb").read())
        rows.append({**r, "path": uri})
    storage.write_bytes_atomic(f"s3://{s3_bucket}/videos/bad.mp4", b"not a video at all")
    rows.append({"path": f"s3://{s3_bucket}/videos/bad.mp4", "label": 1, "video_id": "bad"})
    rows.append({"path": f"s3://{s3_bucket}/videos/absent.mp4", "label": 1, "video_id": "absent"})
    error_uri = f"s3://{s3_bucket}/run/errors"

    out = build_clip_dataset(rows, _cfg(), mode="test", seed=0, error_uri=error_uri).take_all()
    local = _by_video(build_clip_dataset(videos[:2], _cfg(), mode="test", seed=0).take_all())
    assert _by_video(out) == local  # same exact frames from S3 as from disk
    errors = {e["uri"]: e["stage"] for e in collect_errors(error_uri).to_pylist()}
    assert errors == {f"s3://{s3_bucket}/videos/bad.mp4": "open",
                      f"s3://{s3_bucket}/videos/absent.mp4": "open"}


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="mode"):
        build_clip_dataset([{"path": "x"}], _cfg(), mode="eval", seed=0)
    with pytest.raises(ValueError, match="crops"):
        _cfg(crops=2)
    with pytest.raises(ValueError, match="crop_size"):
        DecodeConfig(crop_size=224, train_short_side=(128, 160))


def test_work_units_cover_every_row_of_every_epoch_once_in_bounded_units():
    from pipeline.data.dataset import UNITS_PER_EPOCH, unit_size, unit_span

    for rows, batch, epochs in ((4, 2, 3), (7, 2, 2), (1_200_000, 2, 15)):
        size = unit_size(rows, batch)
        per_epoch = -(-rows // size)
        assert size % batch == 0 and per_epoch <= UNITS_PER_EPOCH
        if rows > 100:
            continue  # the bound is what matters at HowTo100M size; coverage is checked on small ones
        seen = [unit_span(u, rows, size, first_epoch=5) for u in range(epochs * per_epoch)]
        for e in range(5, 5 + epochs):
            covered = sorted(i for ep, lo, hi in seen if ep == e for i in range(lo, hi))
            assert covered == list(range(rows))
