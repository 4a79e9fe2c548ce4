"""The training-format copy (`pipeline.data.transcode`): same frames at the same times, within the codec's loss."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import block_index, write_coded_video
from pipeline.data.clips import ClipConfig, read_clips
from pipeline.data.decode import DecodeError, Video
from pipeline.data.transcode import Encoding, encoder_available, output_size, transcode


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def test_libx264_is_available_here():
    assert encoder_available("libx264") and not encoder_available("no-such-encoder")


def test_output_size_scales_the_short_side_never_up_and_keeps_sizes_even():
    assert output_size(640, 360, 256) == (456, 256)
    assert output_size(360, 640, 256) == (256, 456)
    assert output_size(320, 240, 256) == (320, 240)
    assert output_size(321, 241, 256) == (320, 240)  # to the nearest even size
    assert output_size(540, 270, 256) == (512, 256)


def test_copy_has_the_sources_frames_at_its_times_and_clips_match_within_codec_loss(tmp_path):
    # a web-like source: long GOP, 540x270 -> the default short side 256 (512x256)
    src = write_coded_video(tmp_path / "src.mp4", codec="libx264", fmt="mp4", num_frames=150, fps=30,
                            size=(540, 270), gop=150, bframes=2, options={"crf": "12"})
    out = transcode(src, str(tmp_path / "copy.mp4"), Encoding())
    assert (out.frames, out.width, out.height, out.filled) == (150, 512, 256, 0)
    row = {"path": src, "video_id": "v", "label": 0}
    # read at the copy's short side: the source is resized exactly as the copy was, so the
    # difference is the codec's loss (docs/DATA.md: other sizes resample the copy a second time)
    cfg = ClipConfig(num_frames=8, sampling_rate=4, crop_size=224, short_side=256, clips=3, crops=3)
    with Video(src) as a, Video(tmp_path / "copy.mp4") as b:
        assert b.info.num_frames == 150 and b.info.fps == 30.0 and not b.info.variable_frame_rate
        assert b.info.keyframes == (*range(0, 150, Encoding().gop), 149)  # a fixed short GOP (+ the last frame)
        assert [b.time_of(i) for i in range(150)] == [a.time_of(i) for i in range(150)]
        frames, _ = b.read(range(150))
        assert [block_index(f) for f in frames] == [i % 256 for i in range(150)]  # frame i is frame i
        ca = read_clips(a, row, cfg, mode="test")
        cb = read_clips(b, row, cfg, mode="test")
    assert ca.starts == cb.starts and ca.ends == cb.ends
    assert psnr(ca.frames, cb.frames) >= 35.0, psnr(ca.frames, cb.frames)


def test_copy_has_b_frames_and_none_of_them_is_a_reference(tmp_path):
    # what makes the copy cheap: a wanted frame costs only its GOP's I/P frames up to the next
    # reference; every B-frame is skipped undecoded when not wanted (docs/DATA.md)
    import av

    from pipeline.data.seek import _is_non_reference, _nal_length_size

    src = write_coded_video(tmp_path / "src.mp4", codec="libx264", fmt="mp4", num_frames=96, fps=30,
                            size=(320, 240), gop=96, bframes=2, options={"crf": "12"})
    transcode(src, str(tmp_path / "copy.mp4"), Encoding())
    packets, kinds = {}, {}  # pts -> packet bytes, pts -> picture type (one pass: demux and decode)
    with av.open(str(tmp_path / "copy.mp4")) as c:
        stream = c.streams.video[0]
        nal_len = _nal_length_size(stream)
        for packet in c.demux(stream):
            if packet.size:
                packets[packet.pts] = bytes(packet)
            kinds.update((f.pts, f.pict_type) for f in packet.decode())
    b_frames = [pts for pts, kind in kinds.items() if kind == av.video.frame.PictureType.B]
    assert len(b_frames) >= len(kinds) // 2, kinds  # mostly B-frames: x264 may pick fewer in a row
    assert all(_is_non_reference(packets[pts], nal_len) for pts in b_frames)
    refs = [pts for pts in kinds if pts not in b_frames]
    assert not any(_is_non_reference(packets[pts], nal_len) for pts in refs)


def test_variable_frame_rate_start_offset_and_rotation_are_kept(tmp_path):
    steps = [1 / 30 if i % 3 else 1 / 10 for i in range(47)]
    pts = 2.5 + np.concatenate([[0.0], np.cumsum(steps)])  # starts at 2.5 s
    src = write_coded_video(tmp_path / "vfr.mkv", codec="libx264", fmt="matroska", num_frames=48, size=(96, 64),
                            pts_seconds=pts.tolist(), rotation=90, options={"crf": "12"})
    out = transcode(src, str(tmp_path / "copy.mp4"), Encoding(gop=8))
    with Video(src) as a, Video(tmp_path / "copy.mp4") as b:
        assert a.info.variable_frame_rate and b.info.variable_frame_rate
        assert b.info.num_frames == out.frames == 48 and b.info.rotation == a.info.rotation == 90
        assert b.info.start_time == 0.0
        assert max(abs(a.time_of(i) - b.time_of(i)) for i in range(49)) < 1e-3
        fa, _ = a.read(range(48))
        fb, _ = b.read(range(48))
    assert fb.shape == fa.shape  # upright in both (the rotation is applied on decode)
    assert psnr(fa, fb) >= 35.0


def test_variable_frame_rate_copies_keep_every_time_including_the_last_frames_end(tmp_path):
    # mp4 stores durations in decode order: a copy ending in a B-frame run gave its last frame
    # another frame's duration (4 of these 12 sources before the last frame became a keyframe)
    rng = np.random.default_rng(0)
    for k in range(12):
        n = int(rng.integers(30, 120))
        pts = 1.0 + np.concatenate([[0.0], np.cumsum(rng.choice([1 / 30, 1 / 10, 1 / 24, 1 / 15], size=n - 1))])
        src = write_coded_video(tmp_path / f"v{k}.mkv", codec="libx264", fmt="matroska", num_frames=n,
                                size=(96, 64), pts_seconds=pts.tolist(), options={"crf": "12"})
        transcode(src, str(tmp_path / f"c{k}.mp4"), Encoding(gop=8))
        with Video(src) as a, Video(tmp_path / f"c{k}.mp4") as b:
            assert a.info.variable_frame_rate and b.info.num_frames == n
            assert max(abs(a.time_of(i) - b.time_of(i)) for i in range(n + 1)) < 1e-3, k


def test_a_bad_source_raises_a_decode_error_with_its_stage(tmp_path, corrupt_videos):
    with pytest.raises(DecodeError) as e:
        transcode(corrupt_videos["text_as_mp4"], str(tmp_path / "x.mp4"), Encoding())
    assert e.value.stage == "open"


def test_encoding_rejects_nonsense():
    for bad in ({"gop": 0}, {"crf": 60}, {"short_side": 0}, {"bframes": -1}):
        with pytest.raises(ValueError):
            Encoding(**bad)
