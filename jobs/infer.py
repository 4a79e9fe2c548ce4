"""Classify long videos: cover each with clips, score them on model actors, aggregate.

    python -m jobs.infer --checkpoint s3://b/run/model.pt --videos s3://b/howto100m/test.csv \\
        --output s3://b/preds --cover --num-frames 8 --sampling-rate 32 --crops 3 --plot

`--videos` is a manifest (csv/tsv/jsonl/json/parquet) or a folder/prefix of videos. Outputs
under `--output`: `predictions.parquet` (+ `.jsonl` with `--jsonl`), `parts/`, `errors.parquet`,
`summary.json`, `labels.json`, `plots/` (with `--plot`). A rerun skips videos already done.
Exit 0 even when some videos failed (they are error rows); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.config import ConfigError, from_dict
from pipeline.infer import InferConfig, run_inference


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.infer", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="model checkpoint URI (pipeline.model format)")
    p.add_argument("--videos", required=True, help="manifest file or folder/prefix of videos")
    p.add_argument("--output", required=True, help="output folder URI")
    p.add_argument("--labels", help="labels.json (default: the one beside the checkpoint)")
    p.add_argument("--howto100m-template", help="read --videos as a HowTo100M task CSV "
                   "(video_id,task_id); paths like s3://bucket/howto100m/{video_id}.mp4")
    p.add_argument("--num-frames", type=int, help="frames per clip (default: the model's)")
    p.add_argument("--sampling-rate", type=int, default=32)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cover", action="store_true", help="clips covering the whole video (default)")
    mode.add_argument("--clips", type=int, help="K uniformly spaced clips instead of covering")
    p.add_argument("--crops", type=int, choices=(1, 3), default=1)
    p.add_argument("--short-side", type=int, help="default: the crop size")
    p.add_argument("--crop-size", type=int, help="default: the model's image size")
    p.add_argument("--aggregate", choices=("mean_logits", "mean_probs", "max"), default="mean_logits")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8, help="clips per model call")
    p.add_argument("--actors", type=int, default=0, help="model actors (0: one per GPU, else 1)")
    p.add_argument("--actor-gpus", type=float, help="GPUs per actor (default: 1 if the cluster has GPUs)")
    p.add_argument("--actor-cpus", type=float, default=1.0)
    p.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs per decode task")
    p.add_argument("--max-videos-in-flight", type=int, default=0)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--part-size", type=int, default=16, help="videos per part file")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--jsonl", action="store_true", help="also write predictions.jsonl")
    p.add_argument("--plot", action="store_true", help="PNG timeline per video under plots/")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> InferConfig:
    """The InferConfig of parsed arguments (validated strictly)."""
    return from_dict(InferConfig, {
        "num_frames": a.num_frames, "sampling_rate": a.sampling_rate,
        "cover": a.clips is None, "clips": a.clips or 1, "crops": a.crops,
        "short_side": a.short_side, "crop_size": a.crop_size, "aggregate": a.aggregate,
        "top_k": a.top_k, "batch_size": a.batch_size, "actors": a.actors,
        "actor_gpus": a.actor_gpus, "actor_cpus": a.actor_cpus, "decode_num_cpus": a.decode_cpus,
        "max_videos_in_flight": a.max_videos_in_flight, "precision": a.precision,
        "part_size": a.part_size, "labels": a.labels, "jsonl": a.jsonl, "plot": a.plot,
    })


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code (0 also when some videos are error rows)."""
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import ray

    if not ray.is_initialized():
        ray.init()  # address from RAY_ADDRESS / a running cluster, else a local one
    try:
        res = run_inference(args.checkpoint, args.videos, args.output, cfg, device=args.device,
                            howto100m_template=args.howto100m_template)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"videos: {res.total} (ok {res.ok}, errors {res.errors}, skipped as already done "
          f"{res.skipped}); clips scored {res.clips} in {res.wall_s:.1f} s; "
          f"actor idle {res.actor_idle:.0%}")
    if res.top1 is not None:
        print(f"top-1 accuracy against the manifest's labels: {res.top1:.3f}")
    print(f"predictions: {res.predictions}")
    if res.errors:
        print(f"errors: {res.output.rstrip('/')}/errors.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
