"""Feed benchmark: CPU per training clip, all-in through Ray Data, from a web-like source vs its training-format copy.

    python -m bench.feed                      # 60 s 640x360 GOP-250 source; base 8x32, HR 16x16@448, L 96x4
    python -m bench.feed --quick              # fewer clips (a smoke run)
    python -m bench.feed --sweep              # also: GOP x CRF x short side of the copy (pure decode, no Ray)
    python -m bench.feed --device cuda [--nvdec] [--gpu-batch 32 4 4] [--peak-tflops 989]
                                              # GPU node: also measured steps, cores per GPU, NVDEC

The source is H.264 (x264 veryfast, CRF 23, B-frames) of textured panning content with noise, GOP
250 (`bench.decode.make_video`, cached in --cache); the copy is made in the same run by the pure
`pipeline.data.transcode.transcode` with the job's defaults (or --gop/--crf/--short-side).

All-in CPU: one local Ray with `--ray-cpus` CPUs builds the training dataset
(`pipeline.data.dataset.build_clip_dataset`, mode "train": random clip, scale jitter, crop, flip)
over rows of the same video and the driver iterates it; CPU seconds of the driver and every Ray
process (user + system, from /proc: its whole process tree) over the iteration, divided by the
clips. Of it, "per clip" is what grows with the clips (the decode tasks and the consumer: the
driver's Python threads other than Ray Data's executor) and "fixed" the cores that the executor,
Ray's native threads in the driver and Ray's daemons burn at a steady rate per node, whatever the
clips/s (on this 1-CPU Ray they land on one core's clips). Decode work = frames decoded per frame
kept, summed from the rows' counters. Cores per H200 for a preset = clips/s one H200 trains at 40 % MFU (989 TFLOP/s dense bf16; a training step
costs 3 forwards = 6 x MACs, counted on meta tensors) x CPU s per clip (all-in, and per clip).
The pure row function's line also gives the part inside FFmpeg's decoder: this file's floor.

`--device cuda` (`bench.feed_cuda`; GPU figures not measured yet: `bash bench/gpu.sh`) then times each preset's
training step on the GPU (bf16 autocast, activation checkpointing for HR and L as their train
configs) and prints clips/s, MFU and the cores per GPU that rate needs (x CPU s per clip all-in
from this run) next to the 40 % MFU estimate; `--nvdec` adds a plain decode loop over the same
8x32 clips with FFmpeg's CPU h264 decoder vs NVDEC (CUDA hwaccel, h264_cuvid). Without a CUDA
device it prints one line and exits 2 before any work.

Targets, base 8x32 train clip, copy vs source: >= 4x less CPU per clip, <= 1.5x the source's
bytes, <= 25 ms all-in per clip (<= 9 cores per H200); L 96x4: the copy not slower.
Printed with the load average: on a shared machine CPU seconds are steadier than wall seconds,
but they still inflate under load (caches, SMT).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import statistics
import sys
import time

import numpy as np

from bench.cpu import DriverThreads, tree_cpu, tree_cpu_s
from bench.feed_cuda import GPU_BATCH, no_cuda, nvdec_report, step_report

os.environ.setdefault("OMP_NUM_THREADS", "1")

H200_TFLOPS = 989.0  # dense bf16 peak
# all-in CPU ms per clip (source, copy) of base, HR, L: the quiet CPU run of 2026-12-01 18:04
# (docs/BENCHMARKS.md "Feed"), for `--steps-only` on a GPU machine without Ray
CPU_MS = (248.1, 50.5, 411.3, 165.8, 548.1, 315.6)
MFU = 0.40
# name -> (model preset, num_frames, sampling_rate, crop): what each preset trains on
PRESETS = {
    "base 8x32@224": ("timesformer_base", 8, 32, 224),
    "HR 16x16@448": ("timesformer_hr", 16, 16, 448),
    "L 96x4@224": ("timesformer_l", 96, 4, 224),
}
# each preset's training config: rows per decode task (`data.batch_size`), clips per worker step
# (`loop.batch_size`), activation checkpointing and classes come from it
CONFIGS = {"base 8x32@224": "timesformer_base_k400.yaml", "HR 16x16@448": "timesformer_hr_k400.yaml",
           "L 96x4@224": "timesformer_l_howto100m.yaml"}


def train_config(name: str):
    """The training job config of a preset (configs/)."""
    from pipeline.config import load_config
    from pipeline.train import TrainJobConfig

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return load_config(TrainJobConfig, os.path.join(root, "configs", CONFIGS[name]))


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


# ----------------------------------------------------------------------------- model cost


@functools.lru_cache(maxsize=None)
def gmacs(preset: str) -> float:
    """Multiply-accumulates of one clip's forward (GMAC), counted on meta tensors."""
    import torch

    from pipeline.model.flops import step_flops
    from pipeline.model.timesformer import PRESETS as MODEL_PRESETS, TimeSformer, TimeSformerConfig

    kw = MODEL_PRESETS[preset]
    with torch.device("meta"):
        model = TimeSformer(TimeSformerConfig(**kw))
    return step_flops(model, (1, 3, kw["num_frames"], kw["image_size"], kw["image_size"]), train=False) / 2e9


def clips_per_s_per_gpu(gmac: float) -> float:
    """Training clips/s of one H200 at MFU: a step is 3 forwards, a forward 2 FLOP per MAC."""
    return MFU * H200_TFLOPS * 1e12 / (3 * 2 * gmac * 1e9)


# ----------------------------------------------------------------------------- measurements


def data_config(frames: int, rate: int, crop: int, clips_per_video: int = 1, rows_per_task: int = 16):
    from pipeline.data.rows import DecodeConfig

    return DecodeConfig(num_frames=frames, sampling_rate=rate, crop_size=crop, batch_size=rows_per_task,
                      clips_per_video=clips_per_video, memory=0)


def rows_of(path: str, n: int) -> list[dict]:
    """n manifest rows of one video (distinct ids: each row draws its own clip)."""
    return [{"path": path, "label": i % 4, "video_id": f"v{i:04d}", "start_sec": None, "end_sec": None}
            for i in range(n)]


def ray_all_in(path: str, cfg, rows: int, loop_batch: int = 8) -> dict[str, float]:
    """CPU s / wall s per clip and decode work, through the Ray Data builder (train mode), consumed
    as the training loop consumes it (its columns, `iter_torch_batches` of `loop_batch` clips).

    cpu: all-in (this process tree); tasks: the decode tasks; per_clip: decode tasks + the
    consumer (the driver's Python threads but Ray Data's executor: the loop and batch formatting);
    fixed: the rest as cores (the executor, Ray's native threads in the driver and its daemons:
    they run at a steady rate per node and job, whatever the clips/s, so on a 1-CPU Ray they weigh
    on each clip ~N times what they do on an N-core node)."""
    from pipeline.data.dataset import build_clip_dataset
    from pipeline.data.rows import WORK_COLUMNS
    from pipeline.train.loop import BATCH_DTYPES

    ds = build_clip_dataset(rows_of(path, rows), cfg, mode="train", seed=0)
    ds = ds.select_columns(["frames", "label", *WORK_COLUMNS])  # as pipeline.train.driver does
    (c0, t0), w0, d0, threads = tree_cpu(), time.perf_counter(), time.process_time(), DriverThreads()
    clips = decoded = kept = 0
    for batch in ds.iter_torch_batches(batch_size=loop_batch, dtypes=BATCH_DTYPES):
        clips += len(batch["label"])
        decoded += int(batch["decoded_frames"].sum())
        kept += int(batch["kept_frames"].sum())
        threads.sample()
    (c1, t1), wall, driver = tree_cpu(), time.perf_counter() - w0, time.process_time() - d0
    consumer = threads.seconds["python"]  # the training loop's share: batches to torch (per clip)
    return {"cpu": (c1 - c0) / clips, "tasks": (t1 - t0) / clips, "wall": wall / clips, "driver": driver / clips,
            "per_clip": ((t1 - t0) + consumer) / clips,  # what grows with clips: decode tasks + consumer
            "fixed": ((c1 - c0) - (t1 - t0) - consumer) / wall,  # cores: executor, Ray's threads and daemons
            "work": decoded / max(kept, 1), "clips": clips}


def pure_cpu(path: str, cfg, rows: int) -> dict[str, float]:
    """CPU s per clip of the row function in this process (no Ray; `rows.video_clips`, what
    `process_row` runs on a local file), decode work, and per clip the CPU s inside FFmpeg's
    decoder and the packets it decoded (`Video.stats`): the floor for this file and clip."""
    from pipeline.data.clips import read_clips, row_rng
    from pipeline.data.decode import Video
    from pipeline.data.rows import clip_rows

    c0 = time.process_time()
    clips = decoded = kept = packets = 0
    decoder_s = 0.0
    for row in rows_of(path, rows):
        with Video(path, threads=cfg.decode_threads, max_pixels=cfg.max_pixels) as video:
            views = clip_rows(read_clips(video, row, cfg, mode="train", rng=row_rng(0, 0, row)), row)
            clips += len(views)
            decoded, kept = decoded + video.stats.decoded, kept + video.stats.kept
            packets, decoder_s = packets + video.stats.packets, decoder_s + video.stats.decode_s
    return {"cpu": (time.process_time() - c0) / clips, "work": decoded / max(kept, 1),
            "decoder": decoder_s / clips, "packets": packets / clips}


def psnr_at_copy_size(src: str, copy: str, short_side: int) -> float:
    """PSNR of 3 uniform 8-frame clips read from source and copy at the copy's short side."""
    from pipeline.data.clips import ClipConfig, read_clips
    from pipeline.data.decode import Video

    cfg = ClipConfig(num_frames=8, sampling_rate=8, crop_size=None, short_side=short_side, clips=3)
    row = {"path": src, "video_id": "v"}
    with Video(src) as a, Video(copy) as b:
        fa, fb = read_clips(a, row, cfg, mode="test").frames, read_clips(b, row, cfg, mode="test").frames
    w = min(fa.shape[-2], fb.shape[-2])  # an odd scaled width is rounded to even in the copy
    mse = float(((fa[..., :w, :].astype(np.float64) - fb[..., :w, :]) ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def make_copy(src: str, out: str, **enc) -> tuple[str, float, float]:
    """(copy path, encode CPU s, bytes ratio) of `src` transcoded with Encoding(**enc)."""
    from pipeline.data.transcode import Encoding, transcode

    c0 = time.process_time()
    transcode(src, out, Encoding(**enc))
    return out, time.process_time() - c0, os.path.getsize(out) / os.path.getsize(src)


# ----------------------------------------------------------------------------- runs


SWEEP = [dict(short_side=256, gop=20, crf=24, fastdecode=True, bframes=3, b_pyramid=True)]  # the first default
SWEEP += [dict(short_side=256, gop=g, crf=c, fastdecode=True, bframes=b, b_pyramid=False)
          for g, b, c in ((20, 3, 24), (16, 7, 24), (20, 7, 23), (20, 7, 24), (24, 11, 23), (24, 11, 24),
                          (32, 15, 23), (16, 15, 24))]
SWEEP += [dict(short_side=256, gop=24, crf=23, fastdecode=False, bframes=11, b_pyramid=False)]


def sweep(src: str, cache: str, clips: int) -> None:
    """Copies of `src` over GOP x CRF x fastdecode x B-frames (x short side): pure 8x32 clip CPU,
    decode work, bytes and PSNR at the copy's size, each copy measured right after the source."""
    cfg = data_config(8, 32, 224)
    print(f"\n## sweep (pure 8x32 train clip, no Ray, {clips} clips each; {load()})")
    print("| short side | GOP | CRF | fastdecode | B-frames | B pyramid | ms/clip | source ms/clip | source/copy | "
          "decode work | bytes vs source | PSNR dB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for enc in SWEEP:
        path, _, ratio = make_copy(src, os.path.join(cache, "sweep.mp4"), **enc)
        s, m = pure_cpu(src, cfg, clips), pure_cpu(path, cfg, clips)  # paired: load swings hit both
        print(f"| {enc['short_side']} | {enc['gop']} | {enc['crf']} | {enc['fastdecode']} | {enc['bframes']} | "
              f"{enc['b_pyramid']} | "
              f"{m['cpu'] * 1e3:.1f} | {s['cpu'] * 1e3:.1f} | {s['cpu'] / m['cpu']:.2f}x | {m['work']:.2f}x | "
              f"{ratio:.2f}x | {psnr_at_copy_size(src, path, enc['short_side']):.1f} |", flush=True)
    print(load())


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median CPU per clip (its other fields come with it)."""
    return sorted(runs, key=lambda m: m["cpu"])[len(runs) // 2]


def interleaved(src: str, copy: str, cfg, n: int, reps: int, loop_batch: int) -> tuple[dict, dict, list[float]]:
    """`reps` source runs and copy runs, alternating (a shared VM's speed can drift by ~1.4x within
    minutes): (median source run, median copy run, source/copy CPU ratio of each adjacent pair)."""
    runs = [(ray_all_in(src, cfg, n, loop_batch), ray_all_in(copy, cfg, n, loop_batch)) for _ in range(reps)]
    return (median_run([s for s, _ in runs]), median_run([c for _, c in runs]),
            [s["cpu"] / c["cpu"] for s, c in runs])


def idle_ray_cpu_per_s(seconds: float = 3.0) -> float:
    """CPU seconds per second the idle local Ray (GCS, raylet, idle workers) burns."""
    c0, w0 = tree_cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return (tree_cpu_s() - c0) / (time.perf_counter() - w0)


def all_in(src: str, copy: str, args) -> dict[str, tuple[dict, dict]]:
    """Print the all-in table (one local Ray): preset name -> (source, copy) measurements."""
    import ray

    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = ctx.enable_operator_progress_bars = False
    ray_all_in(copy, data_config(8, 32, 224), 8)  # warm-up: workers, imports
    idle = idle_ray_cpu_per_s()
    print(f"idle local Ray: {idle * 1e3:.0f} ms CPU per second (included in all-in, as are the driver's Ray Data "
          f"executor and Ray's daemons: per node, so spread over a node's cores in production; 'per clip' "
          f"= decode tasks + the consumer's batches, the part that grows with the clips)")
    scale, reps = (0.25, 1) if args.quick else (1.0, args.reps)
    rows = {"base 8x32@224": 96, "HR 16x16@448": 24, "L 96x4@224": 16}
    results = {}
    print(f"\n## all-in through Ray Data (train clips; {args.ray_cpus} Ray CPU(s); median of {reps} "
          f"interleaved source/copy runs; {load()})")
    print("| preset | clip | source ms/clip | copy ms/clip | source/copy (paired runs) | decode work source -> copy "
          "| wall ms/clip source, copy | per clip: decode tasks + consumer, source, copy | |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (_, frames, rate, crop) in PRESETS.items():
        job = train_config(name)
        cfg = data_config(frames, rate, crop, rows_per_task=job.data.batch_size)
        n = max(4, int(rows[name] * scale))
        s, c, ratios = interleaved(src, copy, cfg, n, reps, job.loop.batch_size)
        results[name] = (s, c)
        print(f"| {name} | {frames}x{rate} | {s['cpu'] * 1e3:.1f} | {c['cpu'] * 1e3:.1f} | "
              f"{statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)}) | "
              f"{s['work']:.1f}x -> {c['work']:.1f}x | {s['wall'] * 1e3:.0f}, {c['wall'] * 1e3:.0f} | "
              f"{s['per_clip'] * 1e3:.1f}, {c['per_clip'] * 1e3:.1f} | {n} clips per run, {job.data.batch_size} per "
              f"task; decode tasks {s['tasks'] * 1e3:.1f}, {c['tasks'] * 1e3:.1f} ms/clip; fixed (executor + daemons) "
              f"{s['fixed']:.2f}, {c['fixed']:.2f} cores; {load()} |", flush=True)
    for per_task in (4, 16):
        cfg = data_config(8, 32, 224, clips_per_video=4, rows_per_task=per_task)
        rep = median_run([ray_all_in(copy, cfg, max(4, int(24 * scale))) for _ in range(reps)])
        print(f"| base, copy, clips_per_video=4, {per_task} rows per task | 8x32 | | {rep['cpu'] * 1e3:.1f} | | "
              f"{rep['work']:.1f}x | {rep['wall'] * 1e3:.0f} | {rep['per_clip'] * 1e3:.1f} | decode tasks "
              f"{rep['tasks'] * 1e3:.1f} ms/clip; fixed {rep['fixed']:.2f} cores |")
    pure_s, pure_c = pure_cpu(src, data_config(8, 32, 224), 16), pure_cpu(copy, data_config(8, 32, 224), 16)
    print(f"pure row function (no Ray), base 8x32: source {pure_s['cpu'] * 1e3:.1f} ms, copy "
          f"{pure_c['cpu'] * 1e3:.1f} ms per clip; of it in FFmpeg's decoder: source {pure_s['decoder'] * 1e3:.1f} ms "
          f"({pure_s['packets']:.1f} packets), copy {pure_c['decoder'] * 1e3:.1f} ms ({pure_c['packets']:.1f} packets)")
    ray.shutdown()
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=60, help="source length")
    p.add_argument("--quick", action="store_true", help="fewer clips")
    p.add_argument("--sweep", action="store_true", help="also sweep GOP x CRF x short side (pure decode)")
    p.add_argument("--short-side", type=int, default=None, help="copy's short side (default: the job's)")
    p.add_argument("--gop", type=int, default=None, help="copy's GOP (default: the job's)")
    p.add_argument("--crf", type=int, default=None, help="copy's CRF (default: the job's)")
    p.add_argument("--reps", type=int, default=3, help="interleaved source/copy runs per preset (median)")
    p.add_argument("--ray-cpus", type=int, default=1, help="CPUs of the local Ray (1: decode tasks one at a time)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cuda: also measured training steps on the GPU and the cores per GPU they need")
    p.add_argument("--gpu-batch", type=int, nargs=3, default=list(GPU_BATCH), metavar=("BASE", "HR", "L"),
                   help="cuda: clips per training step of each preset")
    p.add_argument("--peak-tflops", type=float, default=H200_TFLOPS, help="cuda: dense bf16 peak of the GPU")
    p.add_argument("--nvdec", action="store_true", help="cuda: also decode 8x32 clips with NVDEC vs the CPU")
    p.add_argument("--steps-only", action="store_true",
                   help="cuda: only the GPU half (needs no Ray), CPU per clip from --cpu-ms")
    p.add_argument("--cpu-ms", type=float, nargs=6, default=list(CPU_MS), metavar="MS",
                   help="--steps-only: all-in CPU ms per clip, source and copy, of base, HR and L (a CPU run's)")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/pipeline-bench/feed"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for flag in ("nvdec", "steps_only"):
        if getattr(args, flag) and args.device != "cuda":
            print(f"bench.feed: --{flag.replace('_', '-')} needs --device cuda", file=sys.stderr)
            return 2
    if args.device == "cuda" and (line := no_cuda()):
        print(line, file=sys.stderr)
        return 2
    from bench.decode import cached_video
    from pipeline.data.transcode import Encoding

    print(f"# bench.feed {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {load()}")
    if args.steps_only and not args.nvdec:
        return gpu_half(args, given_cpu(args), {})
    src = cached_video(args.cache, args.seconds, (640, 360), 250)
    enc = {k: v for k, v in (("short_side", args.short_side), ("gop", args.gop), ("crf", args.crf)) if v is not None}
    e = Encoding(**enc)
    copy, enc_cpu, bytes_ratio = make_copy(src, os.path.join(args.cache, f"copy_{args.seconds}s_{e.short_side}_"
                                                             f"g{e.gop}_crf{e.crf}.mp4"), **enc)
    print(f"source {os.path.basename(src)} {os.path.getsize(src) / 1e6:.2f} MB; copy short side {e.short_side}, "
          f"GOP {e.gop}, CRF {e.crf}, {e.preset}: {os.path.getsize(copy) / 1e6:.2f} MB = {bytes_ratio:.2f}x the "
          f"source's bytes; encode {enc_cpu:.1f} CPU s ({enc_cpu / args.seconds:.2f} CPU s per video second); "
          f"PSNR at the copy's size {psnr_at_copy_size(src, copy, e.short_side):.1f} dB")
    if args.sweep:
        sweep(cached_video(args.cache, 20, (640, 360), 250), args.cache, 8 if args.quick else 24)
    if args.steps_only:
        return gpu_half(args, given_cpu(args), {"source": src, "copy": copy})
    results = all_in(src, copy, args)

    print(f"\n## cores per H200 at {MFU:.0%} MFU ({H200_TFLOPS:g} TFLOP/s dense bf16, step = 3 forwards)")
    print("| preset | GMAC/clip fwd | clips/s per GPU | cores all-in (source) | cores all-in (copy) | "
          "per-clip cores (source) | per-clip cores (copy) |")
    print("|---|---|---|---|---|---|---|")
    macs = {name: gmacs(preset) for name, (preset, *_rest) in PRESETS.items()}
    for name, g in macs.items():
        rate = clips_per_s_per_gpu(g)
        s, c = results[name]
        print(f"| {name} | {g:.1f} | {rate:.0f} | {rate * s['cpu']:.1f} | {rate * c['cpu']:.1f} | "
              f"{rate * s['per_clip']:.1f} | {rate * c['per_clip']:.1f} |")

    s, c = results["base 8x32@224"]
    ls, lc = results["L 96x4@224"]
    print(f"\ntargets: base CPU/clip source/copy {s['cpu'] / c['cpu']:.2f}x (>= 4x); bytes {bytes_ratio:.2f}x "
          f"(<= 1.5x); copy all-in {c['cpu'] * 1e3:.1f} ms/clip (<= 25 ms; per clip on a node "
          f"{c['per_clip'] * 1e3:.1f} ms + {c['fixed']:.2f} cores fixed); L 96x4 source/copy "
          f"{ls['cpu'] / lc['cpu']:.2f}x (>= 1: not slower); {load()}")
    return gpu_half(args, results, {"source": src, "copy": copy}) if args.device == "cuda" else 0


def given_cpu(args) -> dict[str, tuple[dict, dict]]:
    """`--cpu-ms` as `all_in`'s results: preset name -> (source, copy) CPU s per clip all-in."""
    ms = args.cpu_ms
    return {name: ({"cpu": ms[2 * i] / 1e3}, {"cpu": ms[2 * i + 1] / 1e3}) for i, name in enumerate(PRESETS)}


def gpu_half(args, results: dict[str, tuple[dict, dict]], files: dict[str, str]) -> int:
    """Measured training steps (and with --nvdec NVDEC decode of `files`) on the GPU; cores per GPU
    from `results` (preset name -> source, copy CPU s per clip all-in)."""
    jobs = {name: train_config(name).model for name in PRESETS}
    rows = [(name, preset, g, clips_per_s_per_gpu(g), *(m["cpu"] for m in results[name]),
             jobs[name].grad_checkpointing, int(jobs[name].overrides["num_classes"]))
            for name, (preset, *_rest) in PRESETS.items() for g in [gmacs(preset)]]
    step_report(rows, args.gpu_batch, args.peak_tflops, load)
    if args.nvdec:
        nvdec_report(files, 4 if args.quick else 16, load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
