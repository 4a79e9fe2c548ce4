"""Synthetic motion corpus: real decodable H.264, labels = motion direction, long-video segments."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from pipeline import storage
from pipeline.data import synthetic
from pipeline.data.decode import decode, probe
from pipeline.data.synthetic import CLASSES, DIRECTIONS, make_corpus, write_long_video, write_motion_video


def _object_mask(frame: np.ndarray) -> np.ndarray:
    """Bright checker cells of the object (the background stays below ~170)."""
    return frame.astype(np.int16).mean(axis=-1) > 175


def _shift(a: np.ndarray, b: np.ndarray, max_shift: int = 24) -> tuple[int, int]:
    """(dx, dy) of the circular roll that best maps the object in frame a onto frame b."""
    ma, mb = _object_mask(a), _object_mask(b)
    best, arg = -1, (0, 0)
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            score = int(np.logical_and(np.roll(ma, (dy, dx), axis=(0, 1)), mb).sum())
            if score > best:
                best, arg = score, (dx, dy)
    return arg


def _direction(frames: np.ndarray) -> str:
    dx, dy = _shift(frames[0], frames[-1])
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


@pytest.mark.parametrize("label", range(len(CLASSES)))
def test_motion_video_decodes_and_moves_in_its_class_direction(tmp_path, label):
    path = str(tmp_path / f"{CLASSES[label]}.mp4")
    write_motion_video(path, label, seconds=1.0, fps=30, size=(64, 48), seed=label + 10)
    info = probe(path)
    assert (info.num_frames, info.width, info.height, info.codec) == (30, 64, 48, "h264")
    frames = decode(path, [0, 12])
    assert _direction(frames) == CLASSES[label]
    dx, dy = _shift(frames[0], frames[1])
    ux, uy = DIRECTIONS[CLASSES[label]]
    assert (dx * ux + dy * uy) >= 3  # moved several pixels along the class direction


def test_object_moves_in_sub_pixel_steps():
    """Half a pixel to the right renders halfway between the whole-pixel frames (bilinear
    coverage at the edges), so slow motion is smooth rather than whole-pixel jumps."""
    rng = np.random.default_rng(0)
    bg = synthetic._background(rng, 48, 64, textured=False)
    sprite = synthetic._sprite(rng, 24, textured=False)

    def at(x: float) -> np.ndarray:
        return synthetic._render(bg, sprite, x, 10.0, rng, noise=0.0).astype(np.float32)

    half = at(20.5)
    np.testing.assert_allclose(half, (at(20.0) + at(21.0)) / 2, atol=1.0)
    assert np.abs(half - at(20.0)).max() > 20  # the edge columns really changed
    wrapped = at(60.25)  # wraps around the right edge onto column 0
    assert np.abs(wrapped[:, 0] - at(0.0)[:, 0]).max() > 20


def test_flat_and_textured_styles():
    """Flat (default): one background colour and one object colour; textured: both vary."""
    rng = np.random.default_rng(0)
    flat_bg, flat_obj = synthetic._background(rng, 48, 64, False), synthetic._sprite(rng, 24, False)
    tex_bg, tex_obj = synthetic._background(rng, 48, 64, True), synthetic._sprite(rng, 24, True)
    inner = (slice(3, -3), slice(3, -3))  # inside the dark rim
    assert len(np.unique(flat_bg.reshape(-1, 3), axis=0)) == 1
    assert len(np.unique(flat_obj[inner].reshape(-1, 3), axis=0)) == 1
    assert tex_bg.reshape(-1, 3).std(axis=0).min() > 3 and tex_obj[inner].reshape(-1, 3).std(axis=0).min() > 3


def test_one_frame_does_not_tell_the_class():
    """Same seed, different labels: the first frames are identical; only motion differs."""
    firsts = [next(synthetic._motion_frames([lab] * 5, fps=30, size=(64, 48), seed=7))
              for lab in range(len(CLASSES))]
    for f in firsts[1:]:
        np.testing.assert_array_equal(f, firsts[0])
    # and start positions differ between videos of the same class
    a = next(synthetic._motion_frames([0], fps=30, size=(64, 48), seed=1))
    b = next(synthetic._motion_frames([0], fps=30, size=(64, 48), seed=2))
    assert not np.array_equal(_object_mask(a), _object_mask(b))


def test_long_video_segments_change_direction_at_boundaries(tmp_path):
    path = str(tmp_path / "long.mp4")
    labels = [1, 2, 0, 3]
    write_long_video(path, labels, segment_seconds=2.0, fps=15, size=(96, 72), seed=3)
    info = probe(path)
    assert info.num_frames == 4 * 30 and info.duration == pytest.approx(8.0, abs=0.1)
    for k, lab in enumerate(labels):
        first = k * 30
        frames = decode(path, [first + 2, first + 12])  # inside segment k (< half a frame of motion)
        assert _direction(frames) == CLASSES[lab], f"segment {k}"


def test_make_corpus_local_manifests_and_labels(tmp_path):
    out = str(tmp_path / "corpus")
    manifest = make_corpus(out, videos=8, long_videos=1, seconds=0.5, size=(64, 48), seed=0,
                           long_segments=2, segment_seconds=1.0)
    assert manifest == storage.join(out, "train.csv")
    labels = json.loads(open(f"{out}/labels.json").read())
    assert labels["names"] == CLASSES
    train = list(csv.DictReader(open(f"{out}/train.csv")))
    val = list(csv.DictReader(open(f"{out}/val.csv")))
    assert len(train) + len(val) == 8 and len(val) == 4  # one video per class goes to val
    assert sorted(r["label"] for r in val) == sorted(CLASSES)
    for row in train + val:
        path = f"{out}/{row['path']}"
        assert probe(path).num_frames == 15
        frames = decode(path, [0, 14])
        assert _direction(frames) == row["label"]
    (long_row,) = list(csv.DictReader(open(f"{out}/long.csv")))
    segments = json.loads(long_row["segments"])
    assert [s[:2] for s in segments] == [[0.0, 1.0], [1.0, 2.0]]
    assert long_row["label"] in {s[2] for s in segments}
    assert probe(f"{out}/{long_row['path']}").duration == pytest.approx(2.0, abs=0.1)


def test_make_corpus_to_s3(s3_bucket):
    uri = f"s3://{s3_bucket}/synth"
    manifest = make_corpus(uri, videos=4, seconds=0.5, size=(64, 48), seed=1)
    assert manifest == f"{uri}/train.csv"
    rows = list(csv.DictReader(io.StringIO(storage.read_bytes(manifest).decode())))
    assert len(rows) == 4  # one video per class: all in train
    with storage.open_uri(f"{uri}/{rows[0]['path']}", "rb") as f:
        frames = decode(f, [0, 14])
    assert _direction(frames) == rows[0]["label"]


def test_bad_arguments_are_errors(tmp_path):
    with pytest.raises(ValueError):
        write_motion_video(str(tmp_path / "x.mp4"), 9, seconds=1)
    with pytest.raises(ValueError):
        write_motion_video(str(tmp_path / "x.mp4"), 0, seconds=1, size=(63, 48))


def test_make_synthetic_job_cli(tmp_path, capsys):
    from jobs.make_synthetic import main

    out = tmp_path / "cli"
    assert main(["--output", str(out), "--videos", "4", "--seconds", "0.5", "--size", "64x48"]) == 0
    assert "train.csv" in capsys.readouterr().out
    assert len(list((out / "videos").glob("*.mp4"))) == 4
    assert main(["--output", str(out), "--videos", "1", "--size", "63x48"]) == 2  # odd size: error


def test_recorded_boxes_cover_the_object_in_every_frame(tmp_path):
    """The box the generator returns for frame j is where the bright object is in decoded frame j
    (wrapping around the edges included), also for a smaller object."""
    for fraction in (0.5, 0.3):
        path = str(tmp_path / f"boxes{fraction}.mp4")
        boxes = write_motion_video(path, 2, seconds=1.0, fps=30, size=(64, 48), seed=5, object_fraction=fraction)
        assert len(boxes) == 30 and boxes[0][2] == boxes[0][3] == int(fraction * 48)
        frames = decode(path, list(range(0, 30, 5)))
        for j, frame in zip(range(0, 30, 5), frames):
            mask = synthetic.box_mask(boxes[j], (64, 48))
            bright = _object_mask(frame)
            assert abs(mask.sum() - boxes[j][2] * boxes[j][3]) < 1e-3
            assert (mask[bright] > 0).mean() > 0.98  # every bright pixel lies in the box
            assert bright[mask == 1].mean() > 0.5  # most of the box is bright (the rim is dark)
