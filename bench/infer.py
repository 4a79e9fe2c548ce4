"""Benchmark long-video inference: the Ray Data path against the hand-written scheduler it replaced.

    python -m bench.infer                                   # CPU, debug model, synthetic videos
    python -m bench.infer --videos 16 --seconds 60 --reps 3
    python -m bench.infer --device cuda --preset timesformer_base --videos 64 --seconds 420

Both run as `python -m jobs.infer` drivers against one local Ray, on the same videos and the
same checkpoint, alternating (new, old, new, old, ...): the baseline is the scheduler-based
implementation taken from git (`--baseline`, default the last commit that had it) into a scratch
folder, so the peer is measured in the same run on the same machine. Per run it reads the job's
summary.json: clips/s, model actors' idle fraction, decode task seconds per clip; it prints the
medians and new/old ratios (target: clips/s >= 0.95x). With CUDA it also gives views/s per GPU
against the TimeSformer paper's inference rate (20 K videos x 3 views on 8 V100).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = "ffb4363"  # the last commit with the hand-written scheduler (pipeline/infer/scheduler.py)
PAPER_VIEWS_PER_S_PER_GPU = {  # TimeSformer paper: 20 K videos x 3 views on 8 V100
    "timesformer_base": 20_000 * 3 / (36 * 60 * 8),
    "timesformer_hr": 20_000 * 3 / (1.06 * 3600 * 8),
    "timesformer_l": 20_000 * 3 / (2.6 * 3600 * 8),
}


def make_videos(folder: str, n: int, seconds: float, size: tuple[int, int], fps: float) -> None:
    """n synthetic long videos (segments of motion), kept between runs of one --work folder."""
    from pipeline.data import synthetic

    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        path = os.path.join(folder, f"v{i:04d}.mp4")
        if not os.path.exists(path):
            seg = max(1, int(seconds // 15))
            labels = [(i + k) % len(synthetic.CLASSES) for k in range(seg)]
            synthetic.write_long_video(path, labels, segment_seconds=seconds / seg, fps=fps, size=size,
                                       seed=i, gop=int(fps * 2))


def baseline_tree(rev: str, work: str) -> str:
    """The project's `pipeline/` and `jobs/` at git revision `rev`, extracted under `work`."""
    dest = os.path.join(work, f"baseline-{rev}")
    if not os.path.exists(dest):
        os.makedirs(dest)
        archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "pipeline", "jobs"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return dest


def save_checkpoint(tree: str, work: str, name: str, preset: str, num_classes: int) -> str:
    """The same model (seed 0) saved by the code in `tree`, in the checkpoint format it reads."""
    path = os.path.join(work, f"{preset}-{name}.pt")
    code = ("import sys, torch; from pipeline.model import create, save; torch.manual_seed(0); "
            f"save(create({preset!r}, num_classes={num_classes}), {path!r})")
    subprocess.run([sys.executable, "-c", code], cwd=tree, env={**os.environ, "PYTHONPATH": tree}, check=True)
    return path


def run_job(tree: str, address: str, args: argparse.Namespace, ckpt: str, videos: str, out: str) -> dict:
    """One `python -m jobs.infer` of the code in `tree`; returns its summary's figures."""
    clip = "--clip." if tree == ROOT else "--"  # the baseline's clip flags are top-level (--sampling-rate)
    cmd = [sys.executable, "-m", "jobs.infer", "--checkpoint", ckpt, "--videos", videos, "--output", out,
           f"{clip}sampling", "cover", f"{clip}sampling-rate", str(args.sampling_rate), f"{clip}crops", str(args.crops),
           "--batch-size", str(args.batch_size), "--device", args.device, "--actor-cpus", str(args.actor_cpus),
           "--decode-num-cpus", str(args.decode_cpus), "--part-size", "64"]
    env = {**os.environ, "PYTHONPATH": tree, "RAY_ADDRESS": address}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: jobs.infer failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    s = json.load(open(os.path.join(out, "summary.json")))
    if s["counts"]["errors"]:
        raise RuntimeError(f"{s['counts']['errors']} videos failed: see {out}/errors.parquet")
    run = s.get("this_run", s)  # the scheduler's summary has this run's figures at the top level
    return {"clips_per_s": run["clips"] / run["wall_s"], "actor_idle": run["actor_idle"],
            "decode_s_per_clip": run["decode_s"] / max(1, run["clips"]), "wall_s": run["wall_s"],
            "job_s": time.perf_counter() - t0, "clips": run["clips"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--preset", help="model preset (default: debug on the CPU, timesformer_base with --device cuda)")
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0, help="length of each synthetic video")
    p.add_argument("--size", default="320x240", help="WxH of the synthetic videos")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--sampling-rate", type=int, default=32, help="HowTo100M coverage: 1/32")
    p.add_argument("--crops", type=int, choices=(1, 3), default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--actor-cpus", type=int, default=1)
    p.add_argument("--decode-cpus", type=float, default=1.0)
    p.add_argument("--num-classes", type=int, default=1059, help="HowTo100M task classes")
    p.add_argument("--reps", type=int, default=2, help="runs of each path, alternating")
    p.add_argument("--baseline", default=BASELINE, help="git revision of the scheduler-based implementation")
    p.add_argument("--cpus", type=int, help="CPUs for the local Ray (default: all)")
    p.add_argument("--work", help="scratch folder, videos kept between runs (default: a temporary one)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    args.preset = args.preset or ("timesformer_base" if args.device == "cuda" else "debug")
    w, h = (int(x) for x in args.size.split("x"))

    import ray
    import torch

    work = args.work or tempfile.mkdtemp(prefix="bench-infer-")
    t0 = time.perf_counter()
    make_videos(os.path.join(work, "videos"), args.videos, args.seconds, (w, h), args.fps)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    address = ray.get_runtime_context().gcs_address
    trees = {"ray_data": ROOT, "scheduler": baseline_tree(args.baseline, work)}
    load = os.getloadavg()[0]
    print(f"# {args.videos} videos of {args.seconds:.0f} s at {w}x{h} {args.fps:g} fps ({time.perf_counter() - t0:.0f} s "
          f"to write); {args.preset} on {args.device}; Ray {ray.cluster_resources().get('CPU')} CPUs; "
          f"load {load:.2f} on {os.cpu_count()} cores; baseline {args.baseline}", flush=True)
    ckpts = {name: save_checkpoint(tree, work, name, args.preset, args.num_classes) for name, tree in trees.items()}
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for rep in range(args.reps):
        for name in (("ray_data", "scheduler") if rep % 2 == 0 else ("scheduler", "ray_data")):
            out = os.path.join(work, f"out-{stamp}-{name}-{rep}")  # a fresh folder: nothing skipped as done
            r = run_job(trees[name], address, args, ckpts[name], os.path.join(work, "videos"), out)
            runs[name].append(r)
            print(f"  {name:9s} run {rep}: {r['clips_per_s']:.2f} clips/s, actor idle {r['actor_idle']:.0%}, "
                  f"decode {r['decode_s_per_clip'] * 1000:.0f} ms/clip, {r['clips']} clips in {r['wall_s']:.1f} s",
                  flush=True)
    med = {k: {m: float(np.median([r[m] for r in v])) for m in v[0]} for k, v in runs.items()}
    new, old = med["ray_data"], med["scheduler"]
    ratio = new["clips_per_s"] / old["clips_per_s"]
    print(f"clips/s: Ray Data {new['clips_per_s']:.2f} vs scheduler {old['clips_per_s']:.2f}: {ratio:.2f}x "
          f"(target >= 0.95x: {'met' if ratio >= 0.95 else 'MISS'})")
    print(f"actor idle: {new['actor_idle']:.0%} vs {old['actor_idle']:.0%}; decode task s per clip: "
          f"{new['decode_s_per_clip'] * 1000:.0f} vs {old['decode_s_per_clip'] * 1000:.0f} ms "
          f"({new['decode_s_per_clip'] / old['decode_s_per_clip']:.2f}x); load after {os.getloadavg()[0]:.2f}")
    paper = PAPER_VIEWS_PER_S_PER_GPU.get(args.preset)
    if args.device == "cuda" and paper:
        views = new["clips_per_s"] * args.crops / max(1, torch.cuda.device_count())
        print(f"views/s per GPU {views:.2f} vs the paper's {paper:.2f}: {views / paper:.2f}x (target >= 2x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "median": med, "ratio_clips_per_s": ratio}, f, indent=2)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
