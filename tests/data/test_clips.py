"""The one clip function on real lossless index videos (no Ray): every stage's recipe picks the
exact source frames the samplers promise, and chunked decoding changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_index_video
from pipeline.data import sampling
from pipeline.data.clips import ClipConfig, read_clips, row_rng
from pipeline.data.decode import DecodeError, Video

SPAN = 16  # 4 frames x rate 4 at 30 fps


@pytest.fixture(scope="module")
def video90(tmp_path_factory) -> str:
    return write_index_video(tmp_path_factory.mktemp("clips") / "v.mp4", num_frames=90, fps=30, gop=12,
                             size=(64, 48))


def _indices(frames: np.ndarray) -> list[int]:
    """Source frame index of every frame of a clip [T, H, W, 3] (R = i % 256, G = i // 256)."""
    r, g = frames[..., 0].astype(np.int64), frames[..., 1].astype(np.int64)
    assert (r == r[:, :1, :1]).all() and (g == g[:, :1, :1]).all(), "frame is not an exact frame"
    return (r[:, 0, 0] + 256 * g[:, 0, 0]).tolist()


def _cfg(**kw) -> ClipConfig:
    return ClipConfig(num_frames=4, sampling_rate=4, crop_size=32, **kw)


def test_cover_clips_hold_the_sampled_frames_with_their_times(video90):
    row = {"path": video90, "video_id": "v"}
    with Video(video90) as video:
        clips = read_clips(video, row, _cfg(sampling="cover", crops=3), mode="test")
    spans = sampling.cover_clips(90, SPAN)
    assert clips.frames.shape == (len(spans), 3, 4, 32, 32, 3) and clips.frames.dtype == np.uint8
    for k, (s, e) in enumerate(spans):
        want, pad = sampling.clip_indices(s, e, 4, 90)
        assert all(_indices(view) == want.tolist() for view in clips.frames[k])
        assert clips.starts[k] == s / 30 and clips.ends[k] == min(e, 90) / 30
        assert clips.num_padded[k] == pad
    assert clips.num_padded[-1] > 0  # the last clip reaches past the end: padded and counted


def test_decoding_in_chunks_gives_the_same_clips(video90):
    row = {"path": video90, "video_id": "v"}
    with Video(video90) as video:
        one = read_clips(video, row, _cfg(sampling="cover", clips_per_decode=100), mode="test")
        many = read_clips(video, row, _cfg(sampling="cover", clips_per_decode=1), mode="test")
    np.testing.assert_array_equal(one.frames, many.frames)
    assert (one.starts, one.ends, one.num_padded) == (many.starts, many.ends, many.num_padded)


def test_segment_limits_the_clips_to_its_frames(video90):
    row = {"path": video90, "video_id": "v", "start_sec": 1.0, "end_sec": 2.0}  # frames [30, 60)
    with Video(video90) as video:
        clips = read_clips(video, row, _cfg(clips=3), mode="val")
        got = sorted(i for clip in clips.frames for i in _indices(clip[0]))
        assert got[0] >= 30 and got[-1] <= 59
        assert clips.starts[0] == pytest.approx(1.0)
        with pytest.raises(DecodeError, match="segment"):
            read_clips(video, {**row, "start_sec": 5.0, "end_sec": 6.0}, _cfg(), mode="val")


def test_train_clips_are_reproducible_from_the_row_rng(video90):
    row = {"path": video90, "video_id": "v"}
    with Video(video90) as video:
        a = read_clips(video, row, _cfg(), mode="train", rng=row_rng(0, 1, row))
        b = read_clips(video, row, _cfg(), mode="train", rng=row_rng(0, 1, row))
        c = read_clips(video, row, _cfg(), mode="train", rng=row_rng(0, 2, row))
    assert a.frames.shape == (1, 1, 4, 32, 32, 3)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert (a.starts, _indices(a.frames[0, 0])) != (c.starts, _indices(c.frames[0, 0])) or \
        not np.array_equal(a.frames, c.frames)
    step = _indices(a.frames[0, 0])
    assert step == sorted(step) and step[-1] - step[0] <= SPAN


def test_train_takes_several_independent_clips_from_one_open_and_one_decode_pass(video90):
    row = {"path": video90, "video_id": "v"}
    cfg = _cfg(clips_per_video=4, train_short_side=(32, 48))
    with Video(video90) as video:
        reads = []
        read = video.read
        video.read = lambda *a, **k: reads.append(1) or read(*a, **k)  # count decode passes
        many = read_clips(video, row, cfg, mode="train", rng=row_rng(0, 1, row))
        assert len(reads) == 1 and video.stats.kept <= 16 and video.stats.decoded >= video.stats.kept
    with Video(video90) as video:
        again = read_clips(video, row, cfg, mode="train", rng=row_rng(0, 1, row))
        one = read_clips(video, row, _cfg(train_short_side=(32, 48)), mode="train", rng=row_rng(0, 1, row))
    assert many.frames.shape == (4, 1, 4, 32, 32, 3)
    np.testing.assert_array_equal(many.frames, again.frames)  # reproducible from the row rng
    assert many.starts[0] == one.starts[0] and _indices(many.frames[0, 0]) == _indices(one.frames[0, 0])
    assert len(set(many.starts)) > 1  # each clip its own span ...
    crops = {many.frames[k, 0, 0, :, :, 2].tobytes() for k in range(4)}
    assert len(crops) == 4  # ... and its own scale / crop / flip (the B texture differs)
    for k in range(4):
        idx = _indices(many.frames[k, 0])
        assert idx[0] == round(many.starts[k] * 30) and idx == sorted(idx) and idx[-1] - idx[0] <= SPAN
    with pytest.raises(ValueError, match="clips_per_video"):
        _cfg(clips_per_video=0)


def test_config_names_the_bad_field():
    with pytest.raises(ValueError, match="crops"):
        ClipConfig(crops=2)
    with pytest.raises(ValueError, match="sampling"):
        ClipConfig(sampling="dense")
    with pytest.raises(ValueError, match="short_side"):
        ClipConfig(crop_size=224, short_side=200)
    with pytest.raises(ValueError, match="train mode"):
        read_clips(None, {}, ClipConfig(), mode="train")


def test_variable_frame_rate_clip_times_are_presentation_times(tmp_path):
    """A VFR mkv (nominal 30 fps, real ~12): clip starts/ends are the frames' presentation times,
    and a segment in seconds maps to the frames shown then."""
    rng = np.random.default_rng(0)
    gaps = rng.choice([1 / 30, 0.05, 0.2], size=60)
    pts = np.concatenate([[0.0], np.cumsum(gaps[:-1])]).round(3).tolist()
    path = write_index_video(tmp_path / "vfr.mkv", num_frames=60, fps=30, container="mkv", pts_seconds=pts)
    row = {"path": path, "video_id": "vfr"}
    with Video(path) as video:
        clips = read_clips(video, row, _cfg(sampling="cover"), mode="test")
        n, span = video.info.num_frames, sampling.clip_span(4, 4, video.info.fps)
        for k, (s, e) in enumerate(sampling.cover_clips(n, span)):
            assert clips.starts[k] == pytest.approx(pts[s], abs=2e-3)
            assert clips.ends[k] == pytest.approx(video.time_of(min(e, n)))
        assert clips.ends[-1] == pytest.approx(video.info.duration)  # the timeline ends where the video does
        seg = read_clips(video, {**row, "start_sec": pts[20], "end_sec": pts[40]}, _cfg(), mode="val")
        assert min(_indices(seg.frames[0, 0])) >= 20 and max(_indices(seg.frames[0, 0])) < 40
