"""The whole pipeline on one machine: local Ray, generated videos, CPU (what `make demo` runs).

1. `jobs.make_synthetic`: short labelled motion videos + long (>= 60 s) multi-segment videos
2. `jobs.preprocess`:     the validation split as sharded Parquet frame batches
3. `jobs.train`:          debug TimeSformer (divided attention), 2 CPU workers, streaming Ray Data
4. `jobs.infer`:          cover each long video with clips, model actor, one prediction + timeline
Then prints validation accuracy, video-level accuracy on the long videos and where the plots are.
Every step is the same entrypoint a cluster user submits with `ray job submit`; here they share
one local Ray (or the cluster RAY_ADDRESS names).

--output holds what the demo wrote, listed in its _demo.json: a re-run removes exactly those files
and starts afresh. A folder that holds other files is refused (they are named) unless --overwrite,
which leaves them where they are. Sizes that training would refuse are refused before step 1.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jobs import infer as infer_job
from jobs import make_synthetic, preprocess
from jobs import train as train_job
from pipeline import storage
from pipeline.cli import parse_job
from pipeline.config import ConfigError
from pipeline.guard import OwnFiles

EXAMPLES = """examples:
  python -m jobs.demo
  python -m jobs.demo --output /tmp/demo --videos 80 --epochs 40
  python -m jobs.demo --output my_folder --overwrite   # a folder that holds other files too (they stay)"""

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "debug.yaml"
MARKER = "_demo.json"  # lists every file the demo wrote in --output: a fresh run removes exactly those


@dataclass
class DemoConfig:
    output: str = "demo_out"  # folder for data, shards, runs, predictions
    videos: int = 160  # short labelled videos (train + val)
    long_videos: int = 4  # long (>= 60 s) multi-segment videos
    segment_seconds: float = 15.0  # seconds per long-video segment
    epochs: int = 80  # 80 x 7 steps reach >= 90 % validation accuracy
    seed: int = 0
    ray_timeout_s: float = 60.0  # give up (exit 2) when the Ray to join does not answer within this
    overwrite: bool = False  # run in a folder that holds other files too: they stay; the demo's earlier files go


def _step(title: str, fn, argv: list[str], own: OwnFiles) -> None:
    print(f"\n=== {title}\n$ python -m {fn.__module__} {' '.join(argv)}", flush=True)
    t0 = time.time()
    try:
        rc = fn(argv)
    finally:
        own.record()  # what the step wrote is the demo's, even when it failed
    if rc != 0:
        raise SystemExit(f"demo: step '{title}' failed with exit code {rc}")
    print(f"--- {title}: done in {time.time() - t0:.0f}s", flush=True)


def step_argvs(args: DemoConfig, out: Path) -> dict[str, list[str]]:
    """The command line of each step (what a cluster user would submit)."""
    data, shards, runs, preds = out / "data", out / "shards", out / "runs", out / "predictions"
    return {
        "generate": ["--output", str(data), "--videos", str(args.videos), "--long-videos", str(args.long_videos),
                     "--segment-seconds", str(args.segment_seconds), "--seed", str(args.seed)],
        "preprocess": ["--manifest", str(data / "val.csv"), "--output", str(shards), "--num-frames", "8",
                       "--sampling-rate", "4", "--short-side", "32", "--crop-size", "32", "--overwrite"],
        "train": ["--config", str(CONFIG), "--set", f"train_manifest={data / 'train.csv'}",
                  "--set", f"val_manifest={data / 'val.csv'}", "--set", f"run.storage_path={runs}",
                  "--set", "run.name=demo", "--set", f"loop.epochs={args.epochs}", "--set", f"loop.seed={args.seed}"],
        "infer": ["--checkpoint", str(runs / "demo" / "model.pt"), "--videos", str(data / "long.csv"),
                  "--output", str(preds), "--clip.sampling", "cover", "--plot", "--actors", "1"]  # frames, rate, crop: model.pt's recipe
                 + (["--overwrite"] if args.overwrite else []),
    }


def check_sizes(args: DemoConfig, train_argv: list[str]) -> None:
    """What the steps would refuse late, refused before step 1 (ConfigError naming the demo's flag):
    the split `make_synthetic` writes, and the training plan `jobs.train` makes of it."""
    from pipeline.data.synthetic import CLASSES, split_sizes
    from pipeline.train import TrainJobConfig, make_plan, validate

    for flag, value in (("--videos", args.videos), ("--long-videos", args.long_videos), ("--epochs", args.epochs)):
        if value < 1:
            raise ConfigError(f"{flag}: must be >= 1, got {value}")
    if not args.segment_seconds > 0:
        raise ConfigError(f"--segment-seconds: must be > 0, got {args.segment_seconds}")
    cfg, _ = parse_job(TrainJobConfig, train_argv, prog="python -m jobs.train", doc=train_job.__doc__)
    validate(cfg)

    def train_clips(videos: int) -> tuple[int, int]:
        per_class, n_val = split_sizes(videos)
        return (sum(per_class) - sum(n_val)) * cfg.data.clips_per_video, sum(n_val)

    def fits(videos: int) -> bool:
        clips, val = train_clips(videos)
        try:
            make_plan(cfg, clips, list(CLASSES))
        except ConfigError:
            return False
        return val > 0

    if not fits(args.videos):
        least = next((v for v in range(args.videos + 1, args.videos + 10_000) if fits(v)), None)
        clips, val = train_clips(args.videos)
        raise ConfigError(f"--videos {args.videos}: {clips} training and {val} validation clips give no full "
                          f"training step ({cfg.loop.batch_size} clips x {cfg.scale.num_workers} workers); "
                          + (f"use --videos {least} or more" if least else "use more --videos"))


def main(argv: list[str] | None = None) -> int:
    import ray

    from pipeline.raystart import connect

    ours = not ray.is_initialized()  # a Ray this run starts (or joins) is shut down before the summary
    try:
        args, _ = parse_job(DemoConfig, argv, prog="python -m jobs.demo", doc=__doc__, examples=EXAMPLES)
        out = Path(args.output).resolve()
        argvs = step_argvs(args, out)
        check_sizes(args, argvs["train"])
        own = OwnFiles(out, MARKER, job="jobs.demo", overwrite=args.overwrite)  # refuses the user's files
        t0 = time.time()
        connect(args.ray_timeout_s, job="jobs.demo")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    own.claim()  # a fresh run: the files of the demo's earlier run go, nothing else
    _step("1/4 generate videos", make_synthetic.main, argvs["generate"], own)
    _step("2/4 preprocess val split to Parquet", preprocess.main, argvs["preprocess"], own)
    _step("3/4 train (debug TimeSformer, 2 CPU workers)", train_job.main, argvs["train"], own)
    _step("4/4 infer on long videos", infer_job.main, argvs["infer"], own)
    if ours:
        ray.shutdown()  # the workers' last output is printed now, not after the summary
    print_summary(out, time.time() - t0)
    return 0


def print_summary(out: Path, seconds: float) -> None:
    """The accuracies and where everything is, from the files the steps wrote."""
    shards, run_dir, preds = out / "shards", out / "runs" / "demo", out / "predictions"
    summary = json.loads((shards / "summary.json").read_text())
    val_acc = _final_val_accuracy(run_dir / "metrics.jsonl")
    rows = scored_rows(str(preds / "predictions.parquet"))  # read once for both accuracies
    acc, n = prediction_accuracy(rows)
    names = json.loads((run_dir / "labels.json").read_text())["names"]
    clip_acc, clips = timeline_accuracy(rows, out / "data" / "long.csv", names)
    plots = sorted((preds / "plots").glob("*.png"))
    print("\n=== demo summary")
    print(f"parquet shards:          {shards} ({summary.get('clips', '?')} clips)")
    print(f"validation clip accuracy: {val_acc:.3f}")
    print(f"video-level accuracy:     {acc:.3f} on {n} long videos (majority segment label; a tie goes to the earliest)")
    print(f"timeline clip accuracy:   {clip_acc:.3f} on {clips} clips inside one segment")
    print(f"training curves:          {run_dir / 'metrics.png'}")
    print(f"timelines:                {plots[0].parent if plots else '(none)'} ({len(plots)} PNGs)")
    print(f"predictions:              {preds / 'predictions.parquet'}")
    print(f"total:                    {seconds:.0f}s", flush=True)


def scored_rows(predictions_uri: str) -> list[dict]:
    """The `status == "ok"` rows of an inference job's predictions.parquet."""
    import pyarrow.parquet as pq

    with storage.open_uri(predictions_uri, "rb") as f:
        return [r for r in pq.read_table(f).to_pylist() if r.get("status") == "ok"]


def prediction_accuracy(rows: list[dict]) -> tuple[float, int]:
    """Fraction of scored videos whose top-1 label equals the manifest label (the long videos'
    majority segment label)."""
    hits = sum(1 for r in rows if r.get("target") is not None and r["label"] == r["target"])
    return (hits / len(rows) if rows else 0.0), len(rows)


def timeline_accuracy(rows: list[dict], long_manifest: Path, labels: list[str]) -> tuple[float, int]:
    """Fraction of timeline clips whose top class (`labels[argmax]`) is the true segment label,
    over the clips that lie inside one segment (`long.csv`'s `segments` column)."""
    import csv

    from pipeline.aggregate import label_at

    with long_manifest.open(newline="") as f:
        segments = {r["video_id"]: json.loads(r["segments"]) for r in csv.DictReader(f)}
    hits = total = 0
    for r in rows:
        segs = segments.get(r["video_id"], [])  # none: every clip is skipped below
        for clip in r["timeline"]:
            truth = label_at(segs, clip["start_sec"])
            if truth is None or truth != label_at(segs, clip["end_sec"] - 1e-6):
                continue  # across a segment boundary: no single true label
            scores = clip["scores"]
            total += 1
            hits += labels[max(range(len(scores)), key=scores.__getitem__)] == truth
    return (hits / total if total else 0.0), total


def _final_val_accuracy(metrics_path: Path) -> float:
    """The last validation accuracy recorded in the run's metrics.jsonl."""
    acc = float("nan")
    for line in metrics_path.read_text().splitlines():
        rec = json.loads(line)
        for key in ("val_acc", "val/acc", "val_accuracy"):
            if key in rec:
                acc = float(rec[key])
    return acc


if __name__ == "__main__":
    sys.exit(main())
