"""Benchmark long-video inference: videos/hour, clips/s, actor idle, decode vs model throughput.

    python -m bench.infer                                  # CPU, debug model, synthetic videos
    python -m bench.infer --device cuda                    # TimeSformer base and L on the GPU(s)
    python -m bench.infer --device cuda --presets timesformer_base --videos 64 --seconds 420

Every run measures three things on the same videos, in the same Ray cluster:
1. the whole job (`run_inference`, HowTo100M coverage: non-overlapping clips, rate 1/32);
2. decode alone: the same decode tasks with nothing consuming them (clips/s);
3. the model alone: one actor scoring ready-made uint8 batches (clips/s);
and prints the job's clips/s against min(decode, model) (pipeline efficiency) and the actors'
idle fraction (target < 10 %). With CUDA it samples GPU utilisation (nvidia-smi) during the job
and compares views/s per GPU with the TimeSformer paper's inference rate (20 K videos x 3 views on
8 V100: TimeSformer 36 min, -HR 1.06 h, -L 2.6 h); target >= 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import numpy as np

# paper (TimeSformer, Table / §4.5): seconds for 20 K videos x 3 views on 8 V100 -> views/s/GPU
PAPER_VIEWS_PER_S_PER_GPU = {
    "timesformer_base": 20_000 * 3 / (36 * 60 * 8),
    "timesformer_hr": 20_000 * 3 / (1.06 * 3600 * 8),
    "timesformer_l": 20_000 * 3 / (2.6 * 3600 * 8),
}


def make_videos(folder: str, n: int, seconds: float, size: tuple[int, int], fps: float) -> list[str]:
    """n synthetic long videos (segments of motion) in parallel Ray tasks; returns paths."""
    import ray

    from pipeline.data import synthetic

    @ray.remote(num_cpus=1)
    def one(i: int) -> str:
        path = os.path.join(folder, f"v{i:04d}.mp4")
        if os.path.exists(path):  # a --work folder from an earlier run
            return path
        seg = max(1, int(seconds // 15))
        labels = [(i + k) % len(synthetic.CLASSES) for k in range(seg)]
        synthetic.write_long_video(path, labels, segment_seconds=seconds / seg, fps=fps, size=size,
                                   seed=i, gop=int(fps * 2))
        return path

    return ray.get([one.remote(i) for i in range(n)])


def decode_only(paths: list[str], spec, decode_cpus: float) -> tuple[float, int]:
    """(seconds, clips) to run every decode task with nothing consuming the clips."""
    import ray

    from pipeline.infer.tasks import decode_video_task

    t0 = time.perf_counter()
    pending, clips = [], 0
    for i, p in enumerate(paths):
        meta_ref, clips_ref = decode_video_task.options(num_cpus=decode_cpus).remote(
            {"video_id": str(i), "uri": p}, spec)
        pending.append(meta_ref)
        del clips_ref
    for meta in ray.get(pending):
        if meta.get("error"):
            raise RuntimeError(meta["error"])
        clips += len(meta["starts"])
    return time.perf_counter() - t0, clips


def model_only(actor, spec, batch_size: int, seconds: float) -> float:
    """Clips/s of one actor on ready uint8 batches (already in the object store)."""
    import ray

    clips = np.random.default_rng(0).integers(
        0, 255, (batch_size, spec.crops, spec.num_frames, spec.crop_size, spec.crop_size, 3), dtype=np.uint8)
    ref = ray.put(clips)
    parts = [(ref, list(range(batch_size)))]
    ray.get(actor.score.remote(parts))  # warm-up (CUDA kernels, allocator)
    n, t0 = 0, time.perf_counter()
    inflight = [actor.score.remote(parts) for _ in range(2)]
    while time.perf_counter() - t0 < seconds:
        done, inflight = ray.wait(inflight, num_returns=1)
        ray.get(done)
        n += batch_size
        inflight.append(actor.score.remote(parts))
    ray.get(inflight)
    n += batch_size * len(inflight)
    return n / (time.perf_counter() - t0)


class GpuSampler:
    """Samples `nvidia-smi` GPU utilisation every 200 ms in a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                vals = [float(x) for x in out.split()]
                if vals:
                    self.samples.append(float(np.mean(vals)))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self._stop.wait(0.2)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def bench_preset(preset: str, args, paths: list[str], work: str) -> dict:
    """Run the three measurements for one model preset."""
    import ray
    import torch

    from pipeline.infer import InferConfig, clip_config, make_actors, plan_inference, run_inference
    from pipeline.model import create, save

    ckpt = os.path.join(work, f"{preset}.pt")
    torch.manual_seed(0)
    save(create(preset, num_classes=args.num_classes), ckpt)
    gpu = args.device == "cuda"
    cfg = InferConfig(sampling="cover", sampling_rate=args.sampling_rate, crops=args.crops,
                      batch_size=args.batch_size, actors=args.actors, actor_cpus=args.actor_cpus,
                      torch_threads=args.actor_cpus if not gpu else 0,
                      actor_gpus=1.0 if gpu else 0.0, precision=args.precision,
                      decode_num_cpus=args.decode_cpus, part_size=64)
    actors = make_actors(ckpt, cfg, device=args.device)
    info = ray.get(actors[0].info.remote())
    spec = clip_config(cfg, plan_inference(ckpt, cfg).resolved.values)

    slots = max(1, int(ray.available_resources().get("CPU", 1) // args.decode_cpus))
    decode_only(paths[:slots], spec, args.decode_cpus)  # warm-up: start the decode workers
    dec_s, dec_clips = decode_only(paths, spec, args.decode_cpus)
    model_cps = model_only(actors[0], spec, args.batch_size, args.model_seconds) * len(actors)

    out = os.path.join(work, f"out-{preset}")
    shutil.rmtree(out, ignore_errors=True)
    with GpuSampler() if gpu else _Null() as sampler:
        res = run_inference(ckpt, [{"video_id": os.path.basename(p), "uri": p} for p in paths], out, cfg,
                            device=args.device, actors=actors)
    for a in actors:
        ray.kill(a)
    if res.errors:
        raise RuntimeError(f"{res.errors} videos failed: see {out}/errors.parquet")
    job_cps = res.clips / res.wall_s
    row = {
        "preset": preset, "device": info["device"], "actors": len(actors), "videos": res.total,
        "clips": res.clips, "clips_per_video": res.clips / max(res.total, 1),
        "frames": spec.num_frames, "crops": spec.crops, "wall_s": round(res.wall_s, 2),
        "videos_per_hour": round(res.total / res.wall_s * 3600, 1),
        "clips_per_s": round(job_cps, 2),
        "decode_clips_per_s": round(dec_clips / dec_s, 2),
        "model_clips_per_s": round(model_cps, 2),
        "pipeline_efficiency": round(job_cps / min(dec_clips / dec_s, model_cps), 3),
        "actor_idle": round(res.actor_idle, 3),
        "decode_core_s_per_clip": round(res.decode_s / max(res.clips, 1), 4),
    }
    if gpu:
        row["gpu_util_mean"] = sampler.mean()
        paper = PAPER_VIEWS_PER_S_PER_GPU.get(preset)
        if paper:
            views = job_cps * spec.crops / max(len(actors), 1)
            row["views_per_s_per_gpu"] = round(views, 2)
            row["paper_views_per_s_per_gpu"] = round(paper, 2)
            row["x_paper"] = round(views / paper, 2)
    return row


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--presets", nargs="+", help="default: debug (cpu); timesformer_base timesformer_l (cuda)")
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0, help="length of each synthetic video")
    p.add_argument("--size", default="320x240", help="WxH of the synthetic videos")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--sampling-rate", type=int, default=32, help="HowTo100M coverage: 1/32")
    p.add_argument("--crops", type=int, choices=(1, 3), default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--actors", type=int, default=0)
    p.add_argument("--actor-cpus", type=int, default=1)
    p.add_argument("--decode-cpus", type=float, default=1.0)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--num-classes", type=int, default=1059, help="HowTo100M task classes")
    p.add_argument("--model-seconds", type=float, default=10.0)
    p.add_argument("--cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--work", help="scratch folder, videos kept between runs (default: a temporary one)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    presets = args.presets or (["debug"] if args.device == "cpu" else ["timesformer_base", "timesformer_l"])
    w, h = (int(x) for x in args.size.split("x"))

    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=args.cpus, include_dashboard=False)
    work = args.work or tempfile.mkdtemp(prefix="bench-infer-")
    os.makedirs(os.path.join(work, "videos"), exist_ok=True)
    t0 = time.perf_counter()
    paths = make_videos(os.path.join(work, "videos"), args.videos, args.seconds, (w, h), args.fps)
    print(f"# {len(paths)} videos of {args.seconds:.0f} s at {w}x{h} {args.fps:g} fps "
          f"written in {time.perf_counter() - t0:.1f} s; cluster {ray.cluster_resources()}")
    rows = [bench_preset(preset, args, paths, work) for preset in presets]
    for r in rows:
        print(json.dumps(r))
        verdict = "OK" if r["actor_idle"] < 0.10 else "actors starved (decode-bound)"
        print(f"  {r['preset']}: {r['videos_per_hour']} videos/h, {r['clips_per_s']} clips/s "
              f"(decode alone {r['decode_clips_per_s']}, model alone {r['model_clips_per_s']}; "
              f"pipeline efficiency {r['pipeline_efficiency']:.0%}); actor idle {r['actor_idle']:.0%}: {verdict}")
        if "x_paper" in r:
            print(f"  {r['preset']}: {r['views_per_s_per_gpu']} views/s/GPU vs paper "
                  f"{r['paper_views_per_s_per_gpu']}: {r['x_paper']}x (target >= 2x); "
                  f"GPU util {r.get('gpu_util_mean')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
