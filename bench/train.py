"""Training throughput.

CPU (default): the debug config through Ray Train on a synthetic corpus, twice in one run:
streaming (decode while training) and a peer fed from pre-decoded, materialized clips (compute
only). Prints step time, clips/s and the fraction of step time spent waiting for data, and the
ratio of the two step times (target: data wait < 5 % of step time).

    python -m bench.train [--videos 96] [--epochs 4]

Resume cost (`--resume`): one epoch of the debug config on a synthetic corpus, a worker killed
after the step at ~90 % of the epoch (`loop.fail_once_at_step`, `run.max_failures=1`), twice in
one run: the manifest stream (the run's data position: the restarted workers decode only the
steps still to come) and its peer, the same clips as a given streaming dataset
(`fit(datasets=...)`, which has no row order to seek in: the restart pulls every consumed
micro-batch through decoding again). Prints the seconds from the restart (its `start` record)
to the first new step, and from the failure to it, for both, and their ratio.

    python -m bench.train --resume [--videos 160]

CUDA: TimeSformer-L (96 x 224, divided) fwd+bwd+SGD step in bf16 autocast, no Ray: step time,
MFU from the model's MAC count (2379.9 GMACs per clip forward; training = 3x; FLOPs = 2 x MACs),
peak memory, and the largest batch per GPU with and without activation checkpointing.

    python -m bench.train --device cuda [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

MACS_PER_CLIP = {"timesformer_l": 2379.9e9, "timesformer_base": 195.8e9, "timesformer_hr": 1702.7e9}


# ----------------------------------------------------------------------------------- CPU


def _summary(run_dir: str) -> dict[str, float]:
    from pipeline.train.metrics import read_metrics

    train = [r for r in read_metrics(run_dir) if r["kind"] == "train"][1:]  # first window = warm-up
    return {
        "step_time_s": statistics.median(r["step_time_s"] for r in train),
        "clips_per_s": statistics.median(r["clips_per_s"] for r in train),
        "data_wait_frac": statistics.mean(r["data_wait_frac"] for r in train),
        "peak_mem_mb": max(r["peak_mem_mb"] for r in train),
    }


def bench_cpu(videos: int, epochs: int) -> dict[str, dict[str, float]]:
    import ray

    from pipeline.config import load_config
    from pipeline.data.dataset import build_clip_dataset
    from pipeline.data.manifest import load_manifest
    from pipeline.data.synthetic import make_corpus
    from pipeline.train.config import TrainJobConfig
    from pipeline.train.driver import fit

    tmp = tempfile.mkdtemp(prefix="bench_train_")
    make_corpus(f"{tmp}/corpus", videos=videos, seconds=2.0, size=(64, 48), seed=0)
    sets = [f"train_manifest={tmp}/corpus/train.csv", f"val_manifest={tmp}/corpus/val.csv",
            f"run.storage_path={tmp}/runs", f"loop.epochs={epochs}", "loop.log_every_steps=2",
            "loop.checkpoint_every_steps=1000", "run.max_failures=0"]
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=int(os.environ.get("BENCH_CPUS", "2")), include_dashboard=False)
    out = {}
    cfg = load_config(TrainJobConfig, "configs/debug.yaml", sets + ["run.name=streaming"])
    fit(cfg)
    out["streaming"] = _summary(f"{tmp}/runs/streaming")

    cfg = load_config(TrainJobConfig, "configs/debug.yaml", sets + ["run.name=predecoded"])
    train = load_manifest(cfg.train_manifest)
    val = load_manifest(cfg.val_manifest, labels=train.labels)
    datasets = {
        "train": build_clip_dataset(train.rows, cfg.data, mode="train", seed=0, epochs=epochs,
                                    materialize=True).select_columns(["frames", "label"]),
        "val": build_clip_dataset(val.rows, cfg.data, mode="val", seed=0,
                                  materialize=True).select_columns(["frames", "label"]),
    }
    fit(cfg, datasets=datasets, num_train_clips=len(train.rows), labels=list(train.labels.names))
    out["predecoded"] = _summary(f"{tmp}/runs/predecoded")
    return out


def _resume_times(run_dir: str) -> dict[str, float]:
    """Seconds from the restarted attempt's `start` record, and from the injected failure (the
    marker's write plus the exit delay), to its first new `train` record."""
    from pipeline.train.metrics import read_metrics

    records = read_metrics(run_dir)
    start = [r for r in records if r["kind"] == "start"][-1]
    first = next(r for r in records if r["kind"] == "train" and r["step"] > start["step"])
    failed = os.path.getmtime(os.path.join(run_dir, "fault_injected"))  # a local run folder
    return {"resumed_at": start["step"], "start_to_step_s": first["time"] - start["time"],
            "failure_to_step_s": first["time"] - failed - 3.0}


def bench_resume(videos: int) -> dict[str, dict[str, float]]:
    """The resume cost of the manifest stream and of a given streaming dataset (see the module docstring)."""
    import ray

    from pipeline.config import load_config
    from pipeline.data.dataset import build_clip_dataset
    from pipeline.data.manifest import load_manifest
    from pipeline.data.synthetic import make_corpus
    from pipeline.train.config import TrainJobConfig
    from pipeline.train.driver import fit
    from pipeline.train.schedule import make_plan

    tmp = tempfile.mkdtemp(prefix="bench_resume_")
    make_corpus(f"{tmp}/corpus", videos=videos, seconds=2.0, size=(64, 48), seed=0)
    sets = [f"train_manifest={tmp}/corpus/train.csv", f"val_manifest={tmp}/corpus/val.csv",
            f"run.storage_path={tmp}/runs", "loop.epochs=1", "loop.log_every_steps=1", "loop.cache_val=false",
            "loop.checkpoint_every_steps=1", "run.max_failures=1", "loop.fail_delay_s=3"]
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=int(os.environ.get("BENCH_CPUS", "2")), include_dashboard=False)
    cfg = load_config(TrainJobConfig, "configs/debug.yaml", sets)
    train = load_manifest(cfg.train_manifest)
    val = load_manifest(cfg.val_manifest, labels=train.labels)
    plan = make_plan(cfg, len(train.rows), list(train.labels.names))
    kill = max(1, int(0.9 * plan.steps_per_epoch))
    sets.append(f"loop.fail_once_at_step={kill}")
    out = {}
    cfg = load_config(TrainJobConfig, "configs/debug.yaml", sets + ["run.name=position"])
    fit(cfg)
    out["position"] = _resume_times(f"{tmp}/runs/position")
    summary = json.load(open(f"{tmp}/runs/position/summary.json"))
    out["position"].update(clips_decoded=summary["clips_decoded"], clips_consumed=summary["clips_consumed"])

    cfg = load_config(TrainJobConfig, "configs/debug.yaml", sets + ["run.name=skip"])
    datasets = {  # the same clips, streamed (not materialized): what a resume used to pull through
        "train": build_clip_dataset(train.rows, cfg.data, mode="train", seed=0, epochs=1).select_columns(
            ["frames", "label", "decoded_frames", "kept_frames"]),
        "val": build_clip_dataset(val.rows, cfg.data, mode="val", seed=0).select_columns(["frames", "label"]),
    }
    fit(cfg, datasets=datasets, num_train_clips=len(train.rows), labels=list(train.labels.names))
    out["skip"] = _resume_times(f"{tmp}/runs/skip")
    out["skip"]["clips_redecoded"] = out["skip"]["resumed_at"] * plan.effective_batch
    return out


# ----------------------------------------------------------------------------------- CUDA


def step_time(model, opt, batch: int, frames: int, size: int, repeats: int) -> float:
    import torch

    x = torch.randn(batch, 3, frames, size, size, device="cuda")
    y = torch.randint(0, model.config.num_classes, (batch,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def _fits(preset: str, batch: int, ckpt: bool) -> bool:
    import torch

    from pipeline import model as models

    model = opt = None
    try:
        model = models.create(preset, num_classes=1059, grad_checkpointing=ckpt).cuda().train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        step_time(model, opt, batch, model.config.num_frames, model.config.image_size, repeats=1)
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        del model, opt
        torch.cuda.empty_cache()


def largest_batch(preset: str, ckpt: bool, limit: int = 256) -> int:
    """Largest batch that trains without running out of memory (doubling, then bisection)."""
    lo, hi = 0, 1
    while hi <= limit and _fits(preset, hi, ckpt):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(preset, mid, ckpt) else (lo, mid)
    return lo


def bench_cuda(preset: str, batch: int, peak_tflops: float, repeats: int) -> dict[str, float]:
    import torch

    from pipeline import model as models

    torch.backends.cuda.matmul.allow_tf32 = True
    out: dict[str, float] = {"device": torch.cuda.get_device_name()}
    for ckpt in (False, True):
        tag = "ckpt" if ckpt else "no_ckpt"
        top = largest_batch(preset, ckpt)
        out[f"largest_batch_{tag}"] = top
        b = min(batch, top) if batch else top
        if b < 1:
            continue
        model = models.create(preset, num_classes=1059, grad_checkpointing=ckpt).cuda().train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        torch.cuda.reset_peak_memory_stats()
        secs = step_time(model, opt, b, model.config.num_frames, model.config.image_size, repeats)
        flops = 3 * 2 * MACS_PER_CLIP[preset] * b
        out[f"batch_{tag}"] = b
        out[f"step_time_s_{tag}"] = secs
        out[f"clips_per_s_{tag}"] = b / secs
        out[f"mfu_{tag}"] = flops / secs / (peak_tflops * 1e12)
        out[f"peak_mem_gb_{tag}"] = torch.cuda.max_memory_allocated() / 2**30
        del model, opt
        torch.cuda.empty_cache()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--videos", type=int, default=96)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--preset", default="timesformer_l")
    p.add_argument("--batch", type=int, default=0, help="cuda: batch to time (0 = the largest that fits)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200 SXM: 989)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--resume", action="store_true", help="CPU: the resume cost, data position vs skipping")
    args = p.parse_args()
    if args.resume:
        res = bench_resume(args.videos if args.videos != 96 else 160)
        for name, r in res.items():
            print(f"{name:>8}: resumed at step {r['resumed_at']}: restart -> first new step "
                  f"{r['start_to_step_s']:.1f} s, failure -> first new step {r['failure_to_step_s']:.1f} s  "
                  + json.dumps({k: v for k, v in r.items() if k.startswith("clips")}))
        print(f"skip / position, restart -> first new step: "
              f"{res['skip']['start_to_step_s'] / max(res['position']['start_to_step_s'], 1e-9):.2f}x; "
              f"failure -> first new step: "
              f"{res['skip']['failure_to_step_s'] / max(res['position']['failure_to_step_s'], 1e-9):.2f}x")
        return
    if args.device == "cuda":
        print(json.dumps(bench_cuda(args.preset, args.batch, args.peak_tflops, args.repeats), indent=2))
        return
    res = bench_cpu(args.videos, args.epochs)
    for name, r in res.items():
        print(f"{name:>11}: step {r['step_time_s'] * 1e3:7.1f} ms  {r['clips_per_s']:6.1f} clips/s  "
              f"data wait {100 * r['data_wait_frac']:5.1f} %  peak RSS {r['peak_mem_mb']:.0f} MB")
    ratio = res["streaming"]["step_time_s"] / res["predecoded"]["step_time_s"]
    print(f"streaming / pre-decoded step time: {ratio:.2f}x  "
          f"(data wait target < 5 %: {'met' if res['streaming']['data_wait_frac'] < 0.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
