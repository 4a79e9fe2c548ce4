"""Frame-exact decode on lossless videos whose frames encode their own index."""

from __future__ import annotations

from fractions import Fraction

import av
import fsspec
import numpy as np
import pytest

from conftest import frame_index, write_index_video
from pipeline.data.decode import DecodeError, Video, decode, decode_with_report, probe


def _indices(frames: np.ndarray) -> list[int]:
    return [frame_index(f) for f in frames]


def _full_decode(path: str) -> np.ndarray:
    """Reference: a plain sequential PyAV decode of every frame, in presentation order."""
    with av.open(path) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    return np.stack(frames)


@pytest.mark.parametrize("bframes", [0, 3], ids=["ip", "bframes"])
@pytest.mark.parametrize("gop", [1, 12, 60])
@pytest.mark.parametrize("fps", [24, 30, Fraction(30000, 1001)], ids=["24", "30", "29.97"])
def test_seek_decode_is_frame_exact(index_video, gop, fps, bframes):
    n = 150
    path = index_video(num_frames=n, fps=fps, gop=gop, start_time=0.5, bframes=bframes)
    info = probe(path)
    assert info.num_frames == n
    assert info.start_time == pytest.approx(0.5, abs=1e-3)
    assert info.fps == pytest.approx(float(fps))
    rng = np.random.default_rng(gop)
    wanted = sorted(set(rng.choice(n, size=20, replace=False).tolist()) | {0, n - 1})
    frames = decode(path, wanted)
    assert frames.dtype == np.uint8 and frames.shape == (len(wanted), 48, 64, 3)
    assert _indices(frames) == wanted
    # the seek path gives the same pixels as a full sequential decode
    np.testing.assert_array_equal(frames, _full_decode(path)[wanted])


@pytest.mark.parametrize("bframes", [0, 3])
def test_sparse_clip_like_sampling_every_kth_frame(index_video, bframes):
    path = index_video(num_frames=300, gop=60, bframes=bframes)
    wanted = list(range(7, 300, 37))
    assert _indices(decode(path, wanted)) == wanted


def test_unsorted_and_repeated_indices_come_back_in_request_order(index_video):
    path = index_video(num_frames=80, gop=12, start_time=0.5, bframes=2)
    wanted = [50, 3, 3, 79, 12, 50, 0, 11]
    assert _indices(decode(path, wanted)) == wanted


def test_all_frames_equal_full_decode_with_nonref_skipping_off_and_on(index_video):
    path = index_video(num_frames=90, gop=30, bframes=3)  # ~half the packets are non-reference
    full = _full_decode(path)
    for skip in (True, False):
        frames, missing = decode_with_report(path, range(90), skip_nonref=skip)
        assert missing == 0
        np.testing.assert_array_equal(frames, full)
    sparse = list(range(1, 90, 5))
    np.testing.assert_array_equal(decode_with_report(path, sparse, skip_nonref=True)[0], full[sparse])


def test_draining_before_a_seek_saves_reference_frames_and_keeps_frames(index_video, monkeypatch):
    from pipeline.data import seek

    path = index_video(num_frames=240, gop=24, bframes=3)
    full = _full_decode(path)
    wanted = list(range(5, 240, 29))  # sparse: a seek per frame, as an 8x32 clip of a short-GOP copy
    runs = {}
    for drain in (False, True):
        monkeypatch.setattr(seek, "DRAIN_BEFORE_SEEK", drain)
        with Video(path) as v:
            frames, _ = v.read(wanted)
            runs[drain] = (frames, v.stats.packets, v.stats.decoded)
    for frames, _, _ in runs.values():
        np.testing.assert_array_equal(frames, full[wanted])
    assert runs[True][1] < runs[False][1]  # fewer packets decoded: no reference frame pushed through for nothing
    assert runs[True][1] >= runs[True][2]  # every frame out came from a packet in
    assert v.stats.decode_s > 0  # CPU seconds inside the decoder


@pytest.mark.parametrize("bframes,gop,start", [(0, 12, 0.0), (2, 12, 0.5), (3, 24, 0.0), (3, 5, 0.25)])
def test_draining_gives_the_frames_of_a_plain_read_for_random_index_sets(index_video, monkeypatch, bframes, gop, start):
    from pipeline.data import seek

    n = 120
    path = index_video(num_frames=n, gop=gop, bframes=bframes, start_time=start)
    full = _full_decode(path)
    rng = np.random.default_rng(gop * 10 + bframes)
    for trial in range(6):  # sparse, dense and mixed sets: stretches that end on B-, P- and I-frames
        size = int(rng.integers(1, 40))
        wanted = sorted(set(rng.choice(n, size=size, replace=False).tolist()))
        packets = {}
        for drain in (False, True):
            monkeypatch.setattr(seek, "DRAIN_BEFORE_SEEK", drain)
            with Video(path) as v:
                frames, _ = v.read(wanted)
                packets[drain] = v.stats.packets
            np.testing.assert_array_equal(frames, full[wanted], err_msg=f"drain={drain} wanted={wanted}")
        assert packets[True] <= packets[False], wanted


def test_decoder_threads_give_same_frames(index_video):
    path = index_video(num_frames=60, gop=12)
    wanted = [5, 17, 40, 59]
    np.testing.assert_array_equal(decode(path, wanted, threads=2), decode(path, wanted, threads=1))


def test_variable_frame_rate_returns_ith_frame_in_presentation_order(index_video):
    rng = np.random.default_rng(0)
    durations = rng.choice([1 / 60, 1 / 30, 1 / 10, 0.2], size=60)
    pts_seconds = np.concatenate([[0.25], 0.25 + np.cumsum(durations)[:-1]])
    path = index_video(num_frames=60, gop=12, pts_seconds=pts_seconds.tolist(), bframes=2)
    info = probe(path)
    assert info.variable_frame_rate and info.num_frames == 60
    wanted = [0, 1, 2, 10, 33, 34, 35, 59, 20]
    assert _indices(decode(path, wanted)) == wanted


@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_container_without_frame_count_is_scanned(index_video, container):
    path = index_video(num_frames=45, gop=10, container=container, start_time=0.5)
    info = probe(path)
    assert info.num_frames == 45
    if container == "mkv":
        assert info.frame_count_source == "scan"  # Matroska stores no frame count
    wanted = [44, 0, 22, 9, 10, 11]
    assert _indices(decode(path, wanted)) == wanted


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(index_video, rotation):
    path = index_video(num_frames=10, gop=5, size=(64, 48), rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    assert info.display_size == ((48, 64) if rotation % 180 else (64, 48))
    frames = decode(path, [3])
    stored = _full_decode(path)[3]  # as stored, not rotated
    np.testing.assert_array_equal(frames[0], np.rot90(stored, k=(rotation % 360) // 90))
    assert frames.shape[1:3] == ((64, 48) if rotation % 180 else (48, 64))
    # the texture (B) of the stored frame has its origin at the top-left; check one corner by hand
    if rotation == 90:  # counter-clockwise: the stored top-right corner ends up top-left
        assert frames[0, 0, 0, 2] == stored[0, -1, 2]


def test_odd_frame_sizes(index_video):
    path = index_video(num_frames=20, gop=6, size=(63, 47))
    info = probe(path)
    assert (info.width, info.height) == (63, 47)
    frames = decode(path, [0, 19, 7])
    assert frames.shape == (3, 47, 63, 3)
    assert _indices(frames) == [0, 19, 7]


def test_short_side_resize_on_output(index_video):
    path = index_video(num_frames=20, gop=6, size=(63, 47))
    frames = decode(path, [4, 5], size=24)
    assert frames.shape == (2, 24, 32, 3)  # 63 * 24 / 47 = 32.2
    # uniform R/G channels survive INTER_LINEAR resizing exactly
    assert _indices(frames) == [4, 5]


def test_file_objects_as_source(index_video):
    path = index_video(num_frames=40, gop=12, start_time=0.5)
    wanted = [39, 2, 20]
    with open(path, "rb") as f:
        assert _indices(decode(f, wanted)) == wanted
        assert probe(f).num_frames == 40
    mem = fsspec.filesystem("memory")
    mem.pipe("/videos/v.mp4", open(path, "rb").read())
    with mem.open("/videos/v.mp4", "rb") as f:
        assert _indices(decode(f, wanted)) == wanted
    with fsspec.open("file://" + path, "rb") as f:
        assert _indices(decode(f, wanted)) == wanted


def test_indices_outside_the_video_are_errors(index_video):
    path = index_video(num_frames=20, gop=6)
    with pytest.raises(DecodeError) as e:
        decode(path, [0, 20])
    assert e.value.stage == "index" and "20" in str(e.value)
    with pytest.raises(DecodeError, match="negative"):
        decode(path, [-1])
    with pytest.raises(DecodeError, match="no frame indices"):
        decode(path, [])


def test_truncated_faststart_mp4_reads_its_decodable_prefix(tmp_path):
    """mp4 with the index up front (faststart) whose media data is cut after 40 packets: the
    index still says 60 frames; the video is its 40 decodable frames, flagged truncated.
    (Before, num_frames was the index's 60 and frames past the cut repeated the last real one.)"""
    src = write_index_video(tmp_path / "src.mp4", num_frames=60, gop=12)
    fast = tmp_path / "fast.mp4"
    with av.open(src) as i, av.open(str(fast), "w", options={"movflags": "faststart"}) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for pk in i.demux(i.streams.video[0]):
            if pk.dts is not None:
                pk.stream = s
                o.mux(pk)
    with av.open(str(fast)) as c:
        packets = [(p.pos, p.size, p.pts) for p in c.demux(c.streams.video[0]) if p.size]
    cut_pos = packets[40][0]  # decode order: packets[:40] are complete
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:cut_pos])
    info = probe(str(cut))
    assert (info.num_frames, info.truncated, info.declared_frames) == (40, True, 60)
    assert not probe(str(fast)).truncated
    frames, missing = decode_with_report(str(cut), [0, 39, 10, 38])
    assert missing == 0
    assert _indices(frames) == [0, 39, 10, 38]
    with pytest.raises(DecodeError, match="beyond"):
        decode(str(cut), [40])


EXPECTED_STAGE = {"missing": "open", "zero_bytes": "open", "truncated": "open",
                  "text_as_mp4": "open", "audio_only": "stream", "garbage_middle": "decode"}


@pytest.mark.parametrize("name", sorted(EXPECTED_STAGE))
def test_corrupt_files_raise_decode_error_with_stage(corrupt_videos, name):
    path = corrupt_videos[name]
    for call in (lambda: probe(path), lambda: decode(path, [0, 30, 59])):
        with pytest.raises(DecodeError) as e:
            call()
        assert e.value.stage == EXPECTED_STAGE[name]
        assert e.value.message


def test_decode_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(DecodeError("open", "file not found: x")))
    assert (err.stage, err.message) == ("open", "file not found: x")


def test_one_open_video_probes_and_reads_many_chunks(index_video):
    path = index_video(num_frames=90, gop=12, bframes=2)
    with open(path, "rb") as f, Video(f, threads=1) as video:
        assert video.info == probe(path)
        for chunk in ([5, 40, 80], [0, 1, 2], [89, 10]):  # backwards and forwards on one container
            frames, past_end = video.read(chunk)
            assert [frame_index(fr) for fr in frames] == chunk and past_end == 0
        with pytest.raises(DecodeError, match="beyond"):
            video.read([90])
