"""Frame truth on every container and codec users bring.

For each encoded video: frame i from `Video.read` equals, pixel for pixel, the i-th frame a plain
sequential `container.decode(video=0)` presents (the reference), at first-GOP, keyframe-adjacent,
B-frame and last indices, read one at a time (every read seeks) and all together; the frame
count matches; each reference frame carries its own index in pixels (`block_index`), so the
reference itself is checked too. VFR files: `time_of` equals the presentation times.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import av
import numpy as np
import pytest

from conftest import block_index, patch_mdhd_timescale, reference_decode, write_coded_video
from pipeline.data.decode import MAX_PIXELS, DecodeError, Video, probe

X264 = "keyint=12:min-keyint=12:scenecut=0:bframes=3:b-adapt=0"
# the encoders each case needs; asserted present so a missing one fails loudly instead of skipping
ENCODERS = {"libx264", "libx265", "libvpx-vp9", "libsvtav1", "mpeg4", "ffv1"}

_rng = np.random.default_rng(3)
VFR_SECONDS = np.concatenate([[0.0], np.cumsum(_rng.choice([0.02, 0.04, 0.1, 0.2], size=47))]).tolist()

CASES = {
    # name: (file suffix, write_coded_video kwargs)
    "mp4_h264_bframes_open_gop": ("mp4", dict(codec="libx264", fmt="mp4", bframes=3, options={
        "x264-params": X264 + ":open-gop=1"})),
    "mkv_h264_bframes": ("mkv", dict(codec="libx264", fmt="matroska", bframes=3, options={
        "x264-params": X264})),
    "webm_vp9": ("webm", dict(codec="libvpx-vp9", fmt="webm", options={
        "deadline": "realtime", "cpu-used": "8"})),
    "ts_h264_start_10s": ("ts", dict(codec="libx264", fmt="mpegts", bframes=3, start_time=10.0,
                                     options={"x264-params": X264})),
    "avi_mpeg4_bframes": ("avi", dict(codec="mpeg4", fmt="avi", bframes=2, time_base=25)),
    "mp4_hevc_bframes": ("mp4", dict(codec="libx265", fmt="mp4", bframes=3, options={
        "x265-params": "keyint=12:min-keyint=12:scenecut=0:bframes=3:log-level=error"})),
    "mp4_av1": ("mp4", dict(codec="libsvtav1", fmt="mp4", options={"svtav1-params": "keyint=12"})),
    "mkv_ffv1_start_2s": ("mkv", dict(codec="ffv1", fmt="matroska", pix_fmt="bgr0", start_time=2.0)),
    "mp4_h264_vfr": ("mp4", dict(codec="libx264", fmt="mp4", bframes=3, pts_seconds=VFR_SECONDS,
                                 options={"x264-params": X264})),
    "mkv_h264_vfr": ("mkv", dict(codec="libx264", fmt="matroska", bframes=3, pts_seconds=VFR_SECONDS,
                                 options={"x264-params": X264})),
    "mp4_h264_rot90": ("mp4", dict(codec="libx264", fmt="mp4", bframes=2, rotation=90)),
    "mp4_h264_rot180": ("mp4", dict(codec="libx264", fmt="mp4", bframes=2, rotation=180)),
    "mp4_h264_rot270": ("mp4", dict(codec="libx264", fmt="mp4", bframes=2, rotation=-90)),
}


def test_encoders_for_the_matrix_are_available():
    """AV1 via SVT-AV1 (decoded by libdav1d), HEVC via x265: if this fails, a case below fails
    too; the list says which encoder this build lacks (nothing is skipped)."""
    missing = sorted(ENCODERS - set(av.codecs_available))
    assert not missing, f"encoders missing from this PyAV/FFmpeg build: {missing}"


TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_in_a_child(path, kw: dict) -> str:
    """`write_coded_video` in a child process. SVT-AV1 run as root puts the threads of the process
    that encodes under SCHED_FIFO 99, and every process started after inherits that: the Ray
    clusters of later tests would starve the machine (`conftest.ordinary_scheduling`)."""
    code = (f"import sys; sys.path.insert(0, {TESTS!r}); from conftest import write_coded_video; "
            f"write_coded_video({str(path)!r}, **{kw!r})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300,
                   env={**os.environ, "SVT_LOG": "1"})  # SVT-AV1: errors only
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    out = {}
    for name, (ext, kw) in CASES.items():
        path = root / f"{name}.{ext}"
        out[name] = _write_in_a_child(path, kw) if kw["codec"] == "libsvtav1" else write_coded_video(path, **kw)
    return out


def _picks(ref: dict) -> list[int]:
    """First GOP, around a keyframe in the middle, B-frames and the last frame."""
    n = len(ref["pts"])
    keys = [i for i, k in enumerate(ref["key"]) if k and i > 0]
    mid_key = keys[len(keys) // 2] if keys else n // 2
    bs = [i for i, t in enumerate(ref["pict"]) if t == 3]
    picks = {0, 1, 2, mid_key - 1, mid_key, mid_key + 1, n - 2, n - 1}
    picks |= set(bs[:: max(1, len(bs) // 4)][:4])
    return sorted(i for i in picks if 0 <= i < n)


def _upright(ref_frame: np.ndarray, rotation: int) -> np.ndarray:
    return np.rot90(ref_frame, k=(rotation % 360) // 90)


def _check_frames(path: str, ref: dict, n: int, rotation: int = 0) -> None:
    picks = _picks(ref)
    with Video(path) as video:
        for i in reversed(picks):  # one read per index: every read seeks (backwards here)
            frames, past = video.read([i])
            assert past == 0
            np.testing.assert_array_equal(frames[0], _upright(ref["rgb"][i], rotation), err_msg=f"frame {i}")
        frames, past = video.read(picks)
        assert past == 0
        for j, i in enumerate(picks):
            np.testing.assert_array_equal(frames[j], _upright(ref["rgb"][i], rotation), err_msg=f"frame {i}")
    # the full sequence in one read (sequential path, non-reference skipping on)
    with Video(path) as video:
        frames, _ = video.read(range(n))
    assert [block_index(_upright(f, -rotation)) for f in frames] == list(range(n))


@pytest.mark.parametrize("name", list(CASES))
def test_frames_equal_sequential_reference(videos, name):
    path, kw = videos[name], CASES[name][1]
    ref = reference_decode(path)
    assert ref["error"] is None and not any(ref["corrupt"])
    n = len(ref["pts"])
    assert n == 48 and [block_index(f) for f in ref["rgb"]] == list(range(n))  # the reference is sane
    info = probe(path)
    assert info.num_frames == n and not info.truncated
    assert info.rotation == kw.get("rotation", 0)
    assert info.start_time == pytest.approx(float(ref["pts"][0] * ref["time_base"]))
    _check_frames(path, ref, n, kw.get("rotation", 0))


@pytest.mark.parametrize("name", [n for n in CASES if "vfr" not in n])
def test_constant_frame_rate_clocks_stay_index_over_fps(videos, name):
    with av.open(videos[name]) as c:
        rate = c.streams.video[0].average_rate
    with Video(videos[name]) as video:
        info = video.info
        assert not info.variable_frame_rate and info.fps == float(rate)
        for i in (0, 1, 7, 30, 47, 48):
            assert video.time_of(i) == i / info.fps
            assert video.index_at(i / info.fps) == i
        assert video.index_at(-1.0) == 0 and video.index_at(1e6) == 48


@pytest.mark.parametrize("name", ["mp4_h264_vfr", "mkv_h264_vfr"])
def test_variable_frame_rate_clocks_are_presentation_times(videos, name):
    ref = reference_decode(videos[name])
    tb, pts = ref["time_base"], ref["pts"]
    times = [float((p - pts[0]) * tb) for p in pts]
    assert times == pytest.approx(VFR_SECONDS, abs=2e-3)  # the container kept the written times
    with Video(videos[name]) as video:
        info = video.info
        assert info.variable_frame_rate and info.num_frames == 48
        assert [video.time_of(i) for i in range(48)] == pytest.approx(times, abs=1e-9)
        with av.open(videos[name]) as c:  # the last frame lasts as long as its packet says
            last_packet = max((p for p in c.demux(video=0) if p.size), key=lambda p: p.pts)
        assert last_packet.duration > 0
        last = float(last_packet.duration * tb)
        assert video.time_of(48) == pytest.approx(times[-1] + last, abs=2e-3)
        assert info.duration == pytest.approx(video.time_of(48))
        assert info.fps == pytest.approx(48 / info.duration)  # real average, not the nominal 25
        assert info.fps < 15  # written at a nominal 25 fps
        for i in range(48):
            assert video.index_at(times[i]) == i
            if i < 47:
                assert video.index_at((times[i] + times[i + 1]) / 2) == i  # the frame shown then
        assert video.index_at(info.duration) == 48 and video.index_at(-0.5) == 0


# ---------------------------------------------------------------- truncated downloads


@pytest.mark.parametrize("kind", ["mkv", "ts", "mp4_faststart", "avi"])
def test_truncated_file_reads_its_decodable_prefix(tmp_path, kind):
    fmt, ext, extra = {"mkv": ("matroska", "mkv", {}), "ts": ("mpegts", "ts", {}),
                       "mp4_faststart": ("mp4", "mp4", {"format_options": {"movflags": "faststart"}}),
                       "avi": ("avi", "avi", {})}[kind]
    codec = dict(codec="mpeg4", time_base=25) if kind == "avi" else dict(codec="libx264", options={
        "x264-params": X264})
    full = write_coded_video(tmp_path / f"full.{ext}", fmt=fmt, num_frames=120, size=(128, 96),
                             bframes=2, **codec, **extra)
    data = open(full, "rb").read()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) * 45 // 100 + 7])  # mid-packet
    ref = reference_decode(cut)
    good = [i for i, c in enumerate(ref["corrupt"]) if not c]
    assert 10 < len(good) < 100  # a real prefix
    info = probe(str(cut))
    # every complete packet is a frame; the reference may lose the frames after the cut packet
    # (decoder error) or show the cut one concealed
    assert info.num_frames >= len(good) and info.num_frames <= len(good) + 3
    assert info.truncated or kind == "ts"  # MPEG-TS has no header saying how long it is
    assert not probe(full).truncated
    with Video(str(cut)) as video:
        frames, past = video.read(range(info.num_frames))
    assert past == 0
    got = [block_index(f) for f in frames]
    assert got == sorted(got) and len(set(got)) == len(got)  # presentation order, no repeats
    for j in good:  # frames the reference shows are identical
        np.testing.assert_array_equal(frames[j], ref["rgb"][j], err_msg=f"frame {j}")


def test_truncated_to_nothing_is_an_error(tmp_path):
    full = write_coded_video(tmp_path / "full.mkv", codec="libx264", fmt="matroska", num_frames=30,
                             size=(128, 96))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(open(full, "rb").read()[:700])  # headers, no complete frame
    with pytest.raises(DecodeError) as e:
        probe(str(cut))
    assert e.value.stage in ("open", "probe", "decode")


# ---------------------------------------------------------------- bad inputs


def test_renamed_png_is_not_a_video(tmp_path):
    import cv2

    png = tmp_path / "picture.png"
    cv2.imwrite(str(png), np.zeros((48, 64, 3), np.uint8))
    fake = tmp_path / "picture.mp4"
    fake.write_bytes(png.read_bytes())
    with pytest.raises(DecodeError) as e:
        probe(str(fake))
    assert e.value.stage == "probe" and "still image" in e.value.message


def test_single_mjpeg_frame_is_not_a_video(tmp_path):
    path = write_coded_video(tmp_path / "one.avi", codec="mjpeg", fmt="avi", num_frames=1,
                             pix_fmt="yuvj420p", time_base=25)
    with pytest.raises(DecodeError, match="single mjpeg image"):
        probe(path)
    motion_jpeg = write_coded_video(tmp_path / "many.avi", codec="mjpeg", fmt="avi", num_frames=10,
                                    pix_fmt="yuvj420p", time_base=25)
    assert probe(motion_jpeg).num_frames == 10  # motion JPEG video is fine


def test_zero_media_timescale_is_rejected(tmp_path):
    good = write_coded_video(tmp_path / "good.mp4", codec="libx264", fmt="mp4", num_frames=20)
    bad = patch_mdhd_timescale(good, tmp_path / "zero.mp4", 0)
    with pytest.raises(DecodeError) as e:
        probe(bad)
    assert e.value.stage == "probe" and "frame rate" in e.value.message


@pytest.mark.parametrize("fps", [Fraction(1, 2), 5000])
def test_absurd_frame_rates_are_rejected(tmp_path, fps):
    path = write_coded_video(tmp_path / "fps.mkv", codec="ffv1", fmt="matroska", pix_fmt="bgr0",
                             num_frames=5, fps=fps, time_base=100000)
    with pytest.raises(DecodeError) as e:
        probe(path)
    assert e.value.stage == "probe" and "fps" in e.value.message


def test_default_pixel_cap_admits_4k():
    assert MAX_PIXELS >= 4096 * 2160 and MAX_PIXELS < 2 * 3840 * 2160


_RSS_PROBE = textwrap.dedent("""
    import sys
    from pipeline.data.decode import DecodeError, probe
    small, big = sys.argv[1], sys.argv[2]
    probe(small)  # warm up: codecs loaded
    def status_mb(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    def peak_growth(call):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        base = status_mb("VmRSS")
        try:
            call()
            result = "accepted"
        except DecodeError as e:
            result = e.stage + ": " + e.message
        return result, status_mb("VmHWM") - base
    capped, grow_capped = peak_growth(lambda: probe(big))
    uncapped, grow_uncapped = peak_growth(lambda: probe(big, max_pixels=None))
    print(repr((capped, grow_capped, uncapped, grow_uncapped)))
""")


def test_pixel_cap_fails_before_allocating(tmp_path):
    """4096x4096 (1.8x the default cap): rejected from the header, peak RSS of the process
    (a subprocess: native memory, peak reset through /proc/self/clear_refs) barely moves;
    probing it uncapped (one frame decoded) costs far more."""
    small = write_coded_video(tmp_path / "small.mp4", codec="libx264", fmt="mp4", num_frames=3)
    big = str(tmp_path / "big.mp4")
    with av.open(big, "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 4096, 4096, "yuv420p"
        s.options = {"preset": "ultrafast"}
        frame = av.VideoFrame(4096, 4096, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([128]) * plane.buffer_size)
        for i in range(2):
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, small, big], cwd=root, check=True,
                         capture_output=True, text=True, timeout=120)
    capped, grow_capped, uncapped, grow_uncapped = eval(out.stdout.strip().splitlines()[-1])
    assert capped.startswith("probe: frame size 4096x4096") and "max_pixels" in capped
    assert uncapped == "accepted"
    assert grow_capped < 8, f"rejected probe grew peak RSS by {grow_capped:.1f} MB"
    assert grow_uncapped > 24, f"uncapped decode grew peak RSS by only {grow_uncapped:.1f} MB"
