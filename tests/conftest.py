"""Shared fixtures: a real local Ray, a real S3 endpoint on loopback, synthetic videos.

Order matters: `s3_server` sets the standard AWS_* variables in this process before `ray_local`
starts Ray, so every Ray worker inherits them (as on a real cluster, where they come from the
node's environment or instance role).
"""

from __future__ import annotations

import os

import pytest

# ---------------------------------------------------------------- scheduling policy


def _realtime_threads() -> list[int]:
    """Threads of this process under a real-time policy (anything but SCHED_OTHER)."""
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(tid)) != os.SCHED_OTHER:
                out.append(int(tid))
        except OSError:  # the thread ended meanwhile
            pass
    return out


@pytest.fixture(autouse=True)
def ordinary_scheduling():
    """Each test leaves this process time-shared. Every process it starts later (Ray nodes,
    workers, job drivers) inherits its policy, and under SCHED_FIFO Ray's polling threads hold
    both cores and starve the rest of the machine: a test that made the process real-time
    (e.g. by encoding with SVT-AV1 as root) fails here, and the process is made time-shared again."""
    yield
    threads = _realtime_threads()
    for tid in threads:
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass
    assert not threads, f"this test left {len(threads)} threads of the test process under a real-time policy"


# ---------------------------------------------------------------- S3 on loopback (moto server)


@pytest.fixture(scope="session")
def s3_proxy(s3_server):
    """The fault-injecting proxy every S3 client of the session talks to (`tests/faults.py`):
    `s3_proxy.fail(503, path_contains=...)` takes the store down, `heal()` brings it back."""
    yield _PROXY[0]


_PROXY: list = []


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP endpoint on 127.0.0.1 (moto's ThreadedMotoServer) behind a fault-injecting
    proxy on loopback; yields the URL clients use (the proxy's)."""
    from moto.server import ThreadedMotoServer

    from faults import FaultProxy

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    proxy = FaultProxy(f"http://{host}:{port}")
    _PROXY.append(proxy)
    url = proxy.url
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    proxy.stop()
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def s3_bucket(s3_server, request):
    """A fresh, empty bucket per test; yields its name."""
    import boto3

    name = "test-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40]
    name = name.strip("-")
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=name)
    yield name
    bucket = boto3.resource("s3", endpoint_url=s3_server).Bucket(name)
    bucket.objects.all().delete()
    bucket.delete()


# ---------------------------------------------------------------- local Ray


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One real local Ray for the whole session (2 CPUs, as on CI)."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's local file store: no server in tests
    # address="local": always a fresh Ray of our own, never a cluster someone started on this machine
    ray.init(address="local", num_cpus=int(os.environ.get("TEST_RAY_CPUS", "2")), include_dashboard=False,
             configure_logging=False, log_to_driver=True)
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------- lossless index videos (decode tests)

INDEX_TIME_BASE = 90000  # pts units per second of the index videos


def write_index_video(path, *, num_frames: int = 30, fps=30, gop: int = 12, size=(64, 48),
                      start_time: float = 0.0, container: str = "mp4", rotation: int = 0,
                      pts_seconds=None, bframes: int = 0) -> str:
    """Write a LOSSLESS video whose frame i encodes i in its pixels (read back by `frame_index`).

    R = i % 256 and G = i // 256 on every pixel; B is a texture that moves with i (so frames
    differ everywhere and orientation is visible). mp4 uses libx264rgb qp=0 (bit-exact rgb24,
    B-frames, fixed GOP `gop`, any size); "mkv" uses FFV1 (no frame count in the container).
    `fps` may be a Fraction (e.g. Fraction(30000, 1001)); `start_time` shifts the first pts;
    `pts_seconds` (one per frame) gives irregular timestamps (variable frame rate);
    `rotation` writes display-matrix rotation (degrees counter-clockwise).
    `bframes` > 0 (mp4): B-frames in a pyramid (x264 drops them when lossless, so qp=1: the flat
    R/G planes still come back exactly, only the B texture is slightly lossy).
    """
    from fractions import Fraction

    import av
    import numpy as np

    w, h = size
    rate = Fraction(fps).limit_denominator(100000)
    out = av.open(str(path), "w", format="matroska" if container == "mkv" else "mp4")
    codec = "ffv1" if container == "mkv" else "libx264rgb"
    stream = out.add_stream(codec, rate=rate)
    stream.width, stream.height = w, h
    stream.pix_fmt = "bgr0" if codec == "ffv1" else "rgb24"
    stream.codec_context.time_base = Fraction(1, INDEX_TIME_BASE)
    stream.codec_context.gop_size = gop
    if codec == "libx264rgb":
        params = f"scenecut=0:keyint={gop}:min-keyint={gop}"
        if bframes:
            stream.codec_context.max_b_frames = bframes
            params += f":bframes={bframes}:b-adapt=0:b-pyramid=normal"
        stream.options = {"qp": "1" if bframes else "0", "x264-params": params}
    if rotation:
        stream.set_display_rotation(rotation)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(num_frames):
        img = np.empty((h, w, 3), np.uint8)  # [H, W, 3]
        img[..., 0] = i % 256
        img[..., 1] = i // 256
        img[..., 2] = (xx * 7 + yy * 13 + i * 3) % 256
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        t = pts_seconds[i] if pts_seconds is not None else start_time + i / rate
        frame.pts = round(t * INDEX_TIME_BASE)
        frame.time_base = Fraction(1, INDEX_TIME_BASE)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return str(path)


def frame_index(frame) -> int:
    """Read back the index a `write_index_video` frame encodes; raises if the frame is not exact."""
    import numpy as np

    r, g = int(frame[0, 0, 0]), int(frame[0, 0, 1])
    if not (np.all(frame[..., 0] == r) and np.all(frame[..., 1] == g)):
        raise AssertionError("frame is not an exact index frame (lossy or wrong orientation?)")
    return r + 256 * g


@pytest.fixture()
def index_video(tmp_path):
    """Factory: index_video(num_frames=, fps=, gop=, size=, start_time=, container=, rotation=,
    pts_seconds=, bframes=) -> path of a lossless video whose frames encode their own index."""
    counter = iter(range(10**6))

    def make(**kwargs) -> str:
        ext = "mkv" if kwargs.get("container") == "mkv" else "mp4"
        return write_index_video(tmp_path / f"index_{next(counter)}.{ext}", **kwargs)

    return make


# ---------------------------------------------------------------- corrupt-file zoo


@pytest.fixture(scope="session")
def corrupt_videos(tmp_path_factory) -> dict:
    """name -> path of bad inputs: missing, zero_bytes, truncated (mp4 cut in half, moov lost),
    text_as_mp4, audio_only, garbage_middle (mp4 whose media data is overwritten with noise)."""
    import av
    import numpy as np

    root = tmp_path_factory.mktemp("corrupt")
    good = write_index_video(root / "good.mp4", num_frames=60, gop=12, size=(64, 48))
    data = open(good, "rb").read()
    zoo = {"missing": str(root / "missing.mp4")}
    (root / "zero_bytes.mp4").write_bytes(b"")
    zoo["zero_bytes"] = str(root / "zero_bytes.mp4")
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    zoo["truncated"] = str(root / "truncated.mp4")
    (root / "text_as_mp4.mp4").write_text("this is not a video\n" * 50)
    zoo["text_as_mp4"] = str(root / "text_as_mp4.mp4")

    audio = root / "audio_only.mp4"
    out = av.open(str(audio), "w")
    stream = out.add_stream("aac", rate=16000)
    stream.layout = "mono"
    for k in range(20):
        frame = av.AudioFrame.from_ndarray(
            (np.sin(np.arange(1024) / 5.0 + k) * 0.3).astype(np.float32)[None, :],
            format="fltp", layout="mono")
        frame.sample_rate = 16000
        frame.pts = k * 1024
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    zoo["audio_only"] = str(audio)

    garbage = bytearray(data)
    rng = np.random.default_rng(0)
    mdat = garbage.find(b"mdat") + 4
    lo, hi = mdat + 64, min(len(garbage) - 1, mdat + (len(garbage) - mdat) * 9 // 10)
    garbage[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    (root / "garbage_middle.mp4").write_bytes(bytes(garbage))
    zoo["garbage_middle"] = str(root / "garbage_middle.mp4")
    return zoo


# ---------------------------------------------------------------- any codec / container (frame-truth tests)

BLOCK_BITS = 8  # frame index bits drawn as blocks across the top of `write_coded_video` frames


def coded_frame(i: int, w: int, h: int):
    """rgb24 [H, W, 3] frame whose top band carries `i` as 8 black/white blocks (bit 0 left),
    readable through lossy codecs; below it a texture that moves with i (frames all differ)."""
    import numpy as np

    img = np.empty((h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    img[...] = ((xx * 5 + yy * 3 + i * 7) % 200 + 28)[..., None]
    band, bw = h // 3, w // BLOCK_BITS
    for b in range(BLOCK_BITS):
        img[:band, b * bw:(b + 1) * bw] = 255 if (i >> b) & 1 else 0
    return img


def block_index(frame) -> int:
    """Read back the index of a `coded_frame` (stored orientation), lossy or not."""
    h, w = frame.shape[:2]
    band, bw = h // 3, w // BLOCK_BITS
    bits = [frame[2:band - 2, b * bw + 2:(b + 1) * bw - 2].mean() > 127 for b in range(BLOCK_BITS)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def write_coded_video(path, *, codec: str, fmt: str, num_frames: int = 48, fps=25, size=(64, 48),
                      pix_fmt: str = "yuv420p", gop: int = 12, bframes: int = 0, options=None,
                      start_time: float = 0.0, pts_seconds=None, time_base: int = 90000,
                      rotation: int = 0, format_options=None) -> str:
    """Encode `coded_frame`s with any PyAV encoder into any container (`fmt`: mp4, matroska,
    webm, mpegts, avi, ...). `pts_seconds` (one per frame) gives irregular timestamps."""
    from fractions import Fraction

    import av

    rate = Fraction(fps).limit_denominator(100000)
    w, h = size
    with av.open(str(path), "w", format=fmt, options=format_options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.codec_context.time_base = Fraction(1, time_base)
        stream.codec_context.gop_size = gop
        if bframes:
            stream.codec_context.max_b_frames = bframes
        if options:
            stream.options = dict(options)
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(coded_frame(i, w, h), format="rgb24")
            t = pts_seconds[i] if pts_seconds is not None else start_time + i / rate
            frame.pts = round(t * time_base)
            frame.time_base = Fraction(1, time_base)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def reference_decode(path) -> dict:
    """A plain sequential `container.decode(video=0)`: what users mean by "frame i".

    Returns {"rgb": [T, H, W, 3] stored orientation, "pts", "time_base", "key", "pict" (1 I,
    2 P, 3 B),
    "corrupt", "error"}; a decoder error (truncated file) ends the decode and is recorded.
    """
    import av
    import numpy as np

    out = {"rgb": [], "pts": [], "key": [], "pict": [], "corrupt": [], "error": None}
    with av.open(str(path)) as c:
        out["time_base"] = c.streams.video[0].time_base
        try:
            for f in c.decode(video=0):
                out["rgb"].append(f.to_ndarray(format="rgb24"))
                out["pts"].append(f.pts)
                out["key"].append(bool(f.key_frame))
                out["pict"].append(int(f.pict_type))  # 1 I, 2 P, 3 B
                out["corrupt"].append(bool(f.is_corrupt))
        except av.FFmpegError as e:
            out["error"] = str(e)
    out["rgb"] = np.stack(out["rgb"]) if out["rgb"] else np.zeros((0, 1, 1, 3), np.uint8)
    return out


def patch_mdhd_timescale(src, dst, timescale: int) -> str:
    """Copy an mp4 with its (first) media header's timescale replaced (e.g. 0: a broken file)."""
    import struct

    data = bytearray(open(str(src), "rb").read())
    at = data.find(b"mdhd")
    assert at > 0 and data[at + 4] == 0, "expects a version-0 mdhd box"
    data[at + 16:at + 20] = struct.pack(">I", timescale)  # type, version+flags, 2 x time, timescale
    open(str(dst), "wb").write(bytes(data))
    return str(dst)


# ---------------------------------------------------------------- user errors of the jobs


def _files(root) -> dict:
    """path -> (size, mtime_ns) of every file under a local folder."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            out[os.path.join(folder, name)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture()
def file_snapshot():
    """`snapshot(folder)`: path -> (size, mtime) of every file under a local folder."""
    return _files


@pytest.fixture()
def user_error(capsys, tmp_path):
    """`check(main, argv, text)`: the job refuses `argv` as a user error: exit 2 in under 15 s, one
    line on stderr naming `text`, no traceback, nothing written under `tmp_path` (or `watch`), and
    Ray not started by it. Returns the line."""
    import time

    def check(main, argv, text: str, watch=tmp_path) -> str:
        import ray

        before, was = _files(watch), ray.is_initialized()
        t0 = time.monotonic()
        rc = main([str(a) for a in argv])
        seconds = time.monotonic() - t0
        err = capsys.readouterr().err.strip()
        assert rc == 2, err
        assert text in err and "\n" not in err and "Traceback" not in err and "\x1b" not in err, err
        assert _files(watch) == before, "a refused job wrote files"
        assert ray.is_initialized() == was
        assert seconds < 15, seconds
        return err

    return check
