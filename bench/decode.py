"""Decode benchmark: our frame-exact seek decode vs a plain PyAV loop vs a full sequential decode.

    python -m bench.decode                      # full: 60/120/600 s, 340x256 + 640x360, GOP 60 + 250
    python -m bench.decode --quick              # 340x256 only, fewer clips
    python -m bench.decode --quick --ray        # also the Ray Data pipeline (pipeline.data.dataset)

Videos are generated once into --cache (H.264, x264 veryfast with B-frames, textured panning
content with noise). All timings are CPU seconds of this process (one core, decoder threads=1),
so "per core" numbers hold on a shared machine; wall seconds are printed beside them.
Printed ratios and their targets:
  ours / plain loop (clips per core)             8x32: >= 1.3x the plain loop; 96x4: >= 0.9x
  K 8x32 clips on a 600 s video / full decode    <= 0.25
  cost per clip 600 s / 60 s                     <= 1.2

    python -m bench.decode --sizes 340x256 --gops 60 --gaps 1,8,16   # re-seek policy A/B

`--gaps` times our decode with each `pipeline.data.seek.RESEEK_MIN_GAP` on the same clips of
the short and the long video, interleaved clip by clip (paired: load swings on a shared machine
hit every policy and both videos alike, so its cost ratios are the steadier ones).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from bench.cpu import tree_cpu_s
from pipeline.data import sampling, seek
from pipeline.data.decode import decode, probe

cv2.setNumThreads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

CLIP_KINDS = {"8x32": (8, 32), "96x4": (96, 4)}  # name -> (num_frames, sampling_rate)


# ----------------------------------------------------------------------------- videos


def make_video(path: str, *, seconds: int, size: tuple[int, int], gop: int, fps: int = 30) -> None:
    """A textured panning scene with a moving block and noise, encoded like a web video."""
    w, h = size
    rng = np.random.default_rng(0)
    tex = cv2.resize(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8),
                     (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    noise = [rng.integers(0, 24, (h, w, 3), dtype=np.uint8) for _ in range(8)]
    tmp = path + ".part"
    with av.open(tmp, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"preset": "veryfast", "crf": "23",
                     "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for j in range(seconds * fps):
            x, y = (3 * j) % w, j % h
            img = cv2.add(tex[y:y + h, x:x + w], noise[j % 8])
            bx, by = (5 * j) % (w - 40), (2 * j) % (h - 40)
            img[by:by + 40, bx:bx + 40] = 255 - img[by:by + 40, bx:bx + 40]
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    os.replace(tmp, path)


def cached_video(cache: str, seconds: int, size: tuple[int, int], gop: int) -> str:
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"bench_{seconds}s_{size[0]}x{size[1]}_gop{gop}.mp4")
    if not os.path.exists(path):
        t = time.perf_counter()
        make_video(path, seconds=seconds, size=size, gop=gop)
        print(f"  generated {os.path.basename(path)} in {time.perf_counter() - t:.1f}s", flush=True)
    return path


# ----------------------------------------------------------------------------- decoders


def plain_clip(path: str, indices: np.ndarray) -> np.ndarray:
    """The plain PyAV loop: seek to the first wanted frame's pts, decode forward (threads=1),
    convert wanted frames, stop after the last one. No skipping, no re-seeking."""
    want = sorted(set(int(i) for i in indices))
    with av.open(path) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        tb, rate, start = s.time_base, s.average_rate, s.start_time or 0
        c.seek(start + round(Fraction(want[0]) / rate / tb), backward=True, any_frame=False, stream=s)
        got, wanted = {}, set(want)
        for frame in c.decode(s):
            k = round((frame.pts - start) * tb * rate)
            if k in wanted:
                got[k] = frame.to_ndarray(format="rgb24", threads=1)
            if k >= want[-1]:
                break
    return np.stack([got[int(i)] for i in indices])


def full_decode(path: str, indices: np.ndarray) -> np.ndarray:
    """Decode every frame sequentially (threads=1), converting the wanted ones."""
    wanted = set(int(i) for i in indices)
    got = {}
    with av.open(path) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        tb, rate, start = s.time_base, s.average_rate, s.start_time or 0
        for frame in c.decode(s):
            k = round((frame.pts - start) * tb * rate)
            if k in wanted:
                got[k] = frame.to_ndarray(format="rgb24", threads=1)
    return np.stack([got[int(i)] for i in indices])


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    cpu: float
    wall: float


def timed(fn, *args) -> tuple[Timing, object]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return Timing(time.process_time() - c0, time.perf_counter() - w0), out


def clip_list(total: int, fps: float, kind: str, k: int, seed: int = 0, *, gop: int | None = None,
              base_total: int | None = None) -> list[np.ndarray]:
    """K random clips' frame indices for a clip kind (same clips for every method).

    With `gop` and `base_total`, clips are paired across videos of one GOP: the starts drawn for
    a `base_total`-frame video, each moved by a random whole number of GOPs, so a clip sits at
    the same place in its GOP in the short and the long video (fair cost-per-clip comparison).
    """
    num_frames, rate = CLIP_KINDS[kind]
    span = sampling.clip_span(num_frames, rate, fps)
    rng = np.random.default_rng(seed)
    base = base_total or total
    out = []
    for _ in range(k):
        start, end = sampling.random_clip(base, span, rng)
        if gop and total > base:
            shift = gop * int(rng.integers(0, (total - base) // gop + 1))
            start, end = start + shift, end + shift
        out.append(sampling.clip_indices(start, end, num_frames, total)[0])
    return out


def per_clip(fn, path: str, clips: list[np.ndarray]) -> Timing:
    total = Timing(0.0, 0.0)
    for idx in clips:
        t, _ = timed(fn, path, idx)
        total.cpu += t.cpu
        total.wall += t.wall
    return Timing(total.cpu / len(clips), total.wall / len(clips))


def bench_video(path: str, clips_per_kind: int, check: bool, gop: int, base_total: int) -> dict:
    info = probe(path)
    res = {"info": info}
    for kind in CLIP_KINDS:
        clips = clip_list(info.num_frames, info.fps, kind, clips_per_kind, gop=gop, base_total=base_total)
        if check:  # same pixels from every method
            np.testing.assert_array_equal(decode(path, clips[0]), plain_clip(path, clips[0]))
        res[kind] = {"ours": per_clip(decode, path, clips), "plain": per_clip(plain_clip, path, clips)}
    return res


def bench_gaps(vids: dict, gaps: list[int], clips_per_kind: int, gop: int, base_total: int) -> None:
    """Our decode under each re-seek gap on the short and the long video, interleaved clip by
    clip (clip k of every video and gap back to back), so load swings hit all alike; prints ms
    per clip and the long / short cost ratios per gap."""
    saved = seek.RESEEK_MIN_GAP
    secs = sorted(vids)
    cost = {}  # (sec, kind, gap) -> cpu s per clip
    try:
        for kind in CLIP_KINDS:
            clips = {}
            for sec in secs:
                info = probe(vids[sec])
                clips[sec] = clip_list(info.num_frames, info.fps, kind, clips_per_kind, gop=gop,
                                       base_total=base_total)
            tot = {(sec, g): 0.0 for sec in secs for g in gaps}
            for k in range(clips_per_kind):
                for g in gaps:
                    seek.RESEEK_MIN_GAP = g
                    for sec in secs:
                        tot[sec, g] += timed(decode, vids[sec], clips[sec][k])[0].cpu
            for (sec, g), t in tot.items():
                cost[sec, kind, g] = t / clips_per_kind
    finally:
        seek.RESEEK_MIN_GAP = saved
    for kind in CLIP_KINDS:
        for g in gaps:
            ms = "  ".join(f"{s}s {cost[s, kind, g] * 1e3:6.1f}" for s in secs)
            print(f"  gap {g:3d} {kind:5s} ours ms/clip: {ms}   cost {secs[-1]}s / {secs[0]}s: "
                  f"{cost[secs[-1], kind, g] / cost[secs[0], kind, g]:5.2f}", flush=True)


# ----------------------------------------------------------------------------- ray


def bench_ray(path: str, clips: int, num_cpus: int = 1) -> tuple[Timing, Timing] | None:
    """Ray Data pipeline (pipeline.data.dataset) on `num_cpus` CPUs: 8x32 random train clips,
    one per row, from one video, vs the plain loop on as many random clips.

    Pipeline CPU = CPU seconds of this process and every Ray process it started (workers,
    raylet, GCS) over the run, so Ray's own overhead counts; wall is per clip x num_cpus.
    Returns (pipeline, plain) per clip, or None when the builder is missing.
    """
    try:
        from pipeline.data import dataset as ds_mod
    except ImportError as e:
        print(f"  --ray: pipeline.data.dataset unavailable ({e})")
        return None
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    info = probe(path)
    short = min(info.width, info.height)
    cfg = ds_mod.DecodeConfig(num_frames=8, sampling_rate=32, crop_size=short,
                            train_short_side=(short, short), hflip=False, num_cpus=1.0, memory=0)
    rows = [{"path": path, "label": 0, "video_id": f"v{i}"} for i in range(clips)]
    plain = per_clip(plain_clip, path, clip_list(info.num_frames, info.fps, "8x32", clips, seed=5))
    ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        for _ in ds_mod.build_clip_dataset(rows[:2], cfg, mode="train", seed=1).iter_batches(batch_size=None):
            pass  # warm up: workers started, modules imported
        c0, w0 = tree_cpu_s(), time.perf_counter()
        n = 0
        for batch in ds_mod.build_clip_dataset(rows, cfg, mode="train", seed=0).iter_batches(batch_size=None):
            n += len(batch["label"])
        pipe = Timing((tree_cpu_s() - c0) / clips,
                      (time.perf_counter() - w0) * num_cpus / clips)
    finally:
        ray.shutdown()
    assert n == clips, f"pipeline returned {n} clips, expected {clips}"
    return pipe, plain


# ----------------------------------------------------------------------------- main


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/pipeline-bench/decode"))
    p.add_argument("--quick", action="store_true", help="340x256 only, 6 clips per kind")
    p.add_argument("--sizes", default="340x256,640x360")
    p.add_argument("--gops", default="60,250")
    p.add_argument("--short", type=int, default=60, help="short video seconds")
    p.add_argument("--medium", type=int, default=120, help=">= 2 min video seconds")
    p.add_argument("--long", type=int, default=600, help="10 min video seconds")
    p.add_argument("--clips", type=int, default=None, help="random clips per kind and video (12; --quick 6)")
    p.add_argument("--k-clips", type=int, default=10,
                   help="8x32 clips per video for the 'K clips vs full decode' ratio")
    p.add_argument("--ray", action="store_true", help="also time the Ray Data pipeline (1 CPU)")
    p.add_argument("--ray-clips", type=int, default=32)
    p.add_argument("--gaps", default="", help="comma list of RESEEK_MIN_GAP values to A/B (only that)")
    args = p.parse_args(argv)
    sizes = [_size(s) for s in args.sizes.split(",")]
    clips = args.clips or (6 if args.quick else 12)
    if args.quick:
        sizes = sizes[:1]
    gops = [int(g) for g in args.gops.split(",")]
    print(f"PyAV {av.__version__}, FFmpeg {getattr(av, 'ffmpeg_version_info', '?')}; "
          f"times are CPU s per clip on one core (wall in brackets)")
    for size in sizes:
        for gop in gops:
            print(f"\n== {size[0]}x{size[1]} GOP {gop} ==", flush=True)
            vids = {sec: cached_video(args.cache, sec, size, gop)
                    for sec in sorted({args.short, args.medium, args.long})}
            base_total = probe(vids[args.short]).num_frames
            if args.gaps:
                bench_gaps({args.short: vids[args.short], args.long: vids[args.long]},
                           [int(g) for g in args.gaps.split(",")], clips, gop, base_total)
                continue
            results = {sec: bench_video(path, clips, (sec == args.short), gop, base_total)
                       for sec, path in vids.items()}
            for sec, res in results.items():
                for kind in CLIP_KINDS:
                    o, pl = res[kind]["ours"], res[kind]["plain"]
                    print(f"  {sec:4d}s {kind:5s} ours {o.cpu * 1e3:7.1f} ms [{o.wall * 1e3:7.1f}]  "
                          f"plain {pl.cpu * 1e3:7.1f} ms [{pl.wall * 1e3:7.1f}]  "
                          f"ours/plain speed {pl.cpu / o.cpu:5.2f}x  (target >= {1.3 if kind == '8x32' else 0.9})")
            long_path, long_info = vids[args.long], results[args.long]["info"]
            kclips = clip_list(long_info.num_frames, long_info.fps, "8x32", args.k_clips, seed=1)
            t_full, _ = timed(full_decode, long_path, np.concatenate(kclips))
            t_k = Timing(0.0, 0.0)
            for idx in kclips:
                t, _ = timed(decode, long_path, idx)
                t_k.cpu += t.cpu
                t_k.wall += t.wall
            print(f"  full decode {args.long}s: {t_full.cpu:6.2f} s cpu [{t_full.wall:6.2f}] "
                  f"({long_info.num_frames / t_full.cpu:5.0f} fps);  {args.k_clips} x 8x32 clips: "
                  f"{t_k.cpu:5.2f} s -> ratio {t_k.cpu / t_full.cpu:5.3f}  (target <= 0.25)")
            for kind in CLIP_KINDS:
                r = results[args.long][kind]["ours"].cpu / results[args.short][kind]["ours"].cpu
                print(f"  cost per {kind} clip {args.long}s / {args.short}s: {r:5.2f}  (target <= 1.2)")
            if args.ray:
                got = bench_ray(vids[args.medium], args.ray_clips)
                if got is not None:
                    pipe, plain = got
                    print(f"  ray pipeline 8x32 ({args.medium}s video, 1 CPU): {pipe.cpu * 1e3:7.1f} ms cpu/clip "
                          f"[wall {pipe.wall * 1e3:7.1f}] vs plain loop {plain.cpu * 1e3:7.1f} ms "
                          f"[{plain.wall * 1e3:7.1f}] -> pipeline speed per core {plain.cpu / pipe.cpu:5.2f}x plain "
                          f"(target >= 0.9; wall ratio {plain.wall / pipe.wall:4.2f})", flush=True)

if __name__ == "__main__":
    main()
