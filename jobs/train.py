"""Train (or resume, or evaluate) a video transformer with Ray Train.

    python -m jobs.train --config configs/debug.yaml [--set section.key=value ...] [--eval-only]
    ray job submit --working-dir . -- python -m jobs.train --config configs/timesformer_l_howto100m.yaml

Re-running the same command (same run.name and run.storage_path) resumes from the latest
checkpoint. Config errors (unknown key, bad type, missing dataset URI) fail before Ray starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pipeline.config import ConfigError, load_config
from pipeline.train import TrainJobConfig, evaluate_run, fit, validate


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML file with overrides of the TrainJobConfig defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--eval-only", action="store_true",
                   help="video-level multi-view evaluation of the run's model.pt on val_manifest")
    return p.parse_args(argv)


def connect_ray() -> None:
    """Reuse a running Ray in this process, join a cluster (RAY_ADDRESS / `ray start`), or start one."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        ray.init()  # joins a local cluster started with `ray start` if there is one, else starts one


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for config errors, 1 for a failed run)."""
    args = parse_args(argv)
    try:
        cfg = load_config(TrainJobConfig, args.config, args.overrides)
        validate(cfg, need_train=not args.eval_only)
    except (ConfigError, OSError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    connect_ray()
    try:
        if args.eval_only:
            result = evaluate_run(cfg)
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
    print(json.dumps({"metrics": result.metrics, "checkpoint": getattr(result.checkpoint, "path", None)},
                     indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
