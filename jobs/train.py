"""Train (or resume, or evaluate) a video transformer with Ray Train.

Re-running the same command (same run.name and run.storage_path) resumes from the latest
checkpoint. Config errors (unknown key, bad type, missing dataset URI) fail before Ray starts,
with exit code 2; a run that fails after its `run.max_failures` restarts exits 1.
"""

from __future__ import annotations

import json
import sys

from pipeline.cli import explicit_keys, parse_job
from pipeline.config import ConfigError
from pipeline.train import TrainJobConfig, evaluate_run, fit, validate

EXAMPLES = """examples:
  python -m jobs.train --config configs/debug.yaml --optim.lr 0.01 --set data.num_frames=4
  python -m jobs.train --config configs/debug.yaml --eval-only --data.crops 3
  ray job submit --working-dir . -- python -m jobs.train --config configs/timesformer_l_howto100m.yaml"""


def _extra(p) -> None:
    p.add_argument("--eval-only", action="store_true",
                   help="video-level multi-view evaluation of the run's model.pt on val_manifest")


def connect_ray(timeout_s: float) -> None:
    """Reuse a running Ray in this process, join a cluster (RAY_ADDRESS / `ray start`), or start one
    (ConfigError when the Ray to join does not answer within `timeout_s`)."""
    from pipeline.raystart import connect

    connect(timeout_s, job="jobs.train")


def check_manifests(cfg: TrainJobConfig, *, need_train: bool) -> None:
    """The manifests exist (ConfigError naming the key otherwise): checked before Ray starts."""
    from pipeline import storage

    keys = (["train_manifest"] if need_train else []) + ["val_manifest"]
    for key in keys:
        uri = getattr(cfg, key)
        try:
            found = storage.exists(uri)
        except Exception as e:  # noqa: BLE001 - credentials, endpoint, permissions: the user's to fix
            raise ConfigError(f"{key}: cannot read {uri} ({type(e).__name__}: {e})") from None
        if not found:
            raise ConfigError(f"{key}: {uri} not found")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for config errors, 1 for a failed run)."""
    try:
        cfg, args = parse_job(TrainJobConfig, argv, prog="python -m jobs.train", doc=__doc__, examples=EXAMPLES,
                              extra=_extra)
        validate(cfg, need_train=not args.eval_only)
        check_manifests(cfg, need_train=not args.eval_only)
        plan = None
        if args.eval_only:  # the checkpoint and its recipe are checked before Ray starts
            from pipeline.train.recipe import eval_plan

            plan = eval_plan(cfg, explicit_keys(TrainJobConfig, args))
            for warning in plan.warnings:
                print(f"warning: {warning}", file=sys.stderr)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    try:
        connect_ray(cfg.ray_timeout_s)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from pipeline.data.dataset import progress_bars_on_terminal

    progress_bars_on_terminal()
    try:
        if args.eval_only:
            result = evaluate_run(cfg, plan)
            result.pop("predictions", None)
            print(json.dumps(result, indent=2))
            return 0
        result = fit(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a failed run (after max_failures restarts): report it, exit non-zero
        print(f"training failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(final_line(result.metrics, getattr(result.checkpoint, "path", None)), flush=True)
    return 0


def final_line(metrics: dict, checkpoint: str | None) -> str:
    """The run's last figures on one line (all of them are in the run's metrics.jsonl)."""
    shown = [f"{key} {metrics[key]:.4g}" if isinstance(metrics[key], float) else f"{key} {metrics[key]}"
             for key in ("step", "epoch", "loss", "acc", "val_acc", "val_loss") if key in metrics]
    return f"[train] finished: {', '.join(shown) or 'no metrics'}; last checkpoint {checkpoint}"


if __name__ == "__main__":
    sys.exit(main())
