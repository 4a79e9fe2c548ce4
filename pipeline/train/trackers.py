"""Optional experiment trackers on rank 0: TensorBoard event files and MLflow runs (no Ray).

    trackers = Trackers.open(cfg.run, run_dir, config=to_dict(cfg), start_step=step)
    trackers.log({"kind": "train", "step": 10, "loss": 1.2, ...})   # every metrics record
    trackers.close()

Opt-in by config (`run.tensorboard`, `run.mlflow_uri`); the libraries are the `tracking` extra
(`pip install .[tracking]`). Every numeric field of a record is logged as `<kind>/<field>` at the
record's step. A resumed run continues the same MLflow run (its id is kept in the run folder)
and purges TensorBoard events past its checkpoint's step, so a resumed curve has no duplicates.
"""

from __future__ import annotations

import math
import os
from typing import Any

from pipeline import storage

_SKIP = ("step", "epoch", "time", "kind", "resumed_from", "world_size")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """`{"<kind>/<field>": value}` of a metrics record's finite numbers (bools and ids left out)."""
    kind = record.get("kind", "train")
    out = {}
    for key, value in record.items():
        if key in _SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[f"{kind}/{key.removeprefix('val_') if kind == 'val' else key}"] = float(value)
    return out


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params (`optim.lr` -> "0.005"), values cut to MLflow's 500 chars."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:500]
    return out


class Trackers:
    """The trackers a run's config turns on (possibly none)."""

    def __init__(self, tensorboard: Any = None, mlflow_client: Any = None, mlflow_run: str | None = None):
        self.tensorboard, self.mlflow, self.mlflow_run = tensorboard, mlflow_client, mlflow_run

    @classmethod
    def open(cls, run: Any, run_dir: str, *, config: dict[str, Any], start_step: int = 0) -> "Trackers":
        """Start the trackers of `run` (a RunSection) for the run folder `run_dir`."""
        tb = _tensorboard(run, run_dir, start_step) if run.tensorboard else None
        client, run_id = _mlflow(run, run_dir, config) if run.mlflow_uri else (None, None)
        return cls(tb, client, run_id)

    def log(self, record: dict[str, Any]) -> None:
        values, step = scalars(record), int(record.get("step", 0))
        if self.tensorboard is not None:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, step)
            self.tensorboard.flush()
        if self.mlflow is not None and values:
            from mlflow.entities import Metric

            now = int(record.get("time", 0) * 1000)
            self.mlflow.log_batch(self.mlflow_run, metrics=[Metric(k.replace("/", "_"), v, now, step)
                                                            for k, v in values.items()])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow is not None:
            self.mlflow.set_terminated(self.mlflow_run)


def tensorboard_dir(run: Any, run_dir: str) -> str:
    """Where the event files go: `run.tensorboard_dir`, else `<run folder>/tensorboard`."""
    return run.tensorboard_dir or storage.join(run_dir, "tensorboard")


def _tensorboard(run: Any, run_dir: str, start_step: int) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    logdir = tensorboard_dir(run, run_dir)
    if storage.is_local(logdir):
        os.makedirs(storage.local_path(logdir), exist_ok=True)
        logdir = storage.local_path(logdir)
    return SummaryWriter(logdir, purge_step=start_step + 1 if start_step else None)  # keep the checkpoint step


def _mlflow(run: Any, run_dir: str, config: dict[str, Any]) -> tuple[Any, str]:
    """(client, run id): the run recorded in `<run folder>/mlflow_run_id`, else a new one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=run.mlflow_uri)
    id_file = storage.join(run_dir, "mlflow_run_id")
    if storage.exists(id_file):
        run_id = storage.read_bytes(id_file).decode().strip()
        client.update_run(run_id, status="RUNNING")
        return client, run_id
    experiment = client.get_experiment_by_name(run.mlflow_experiment)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(run.mlflow_experiment)
    run_id = client.create_run(exp_id, run_name=run.name).info.run_id
    params = flat_params(config)
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[i:i + 100])
    storage.write_bytes_atomic(id_file, run_id.encode())
    return client, run_id
