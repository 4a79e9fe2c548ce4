"""How big the model actor pool may grow, from what the cluster has and what its autoscaler can add.

    pool = plan_pool(cfg, device, gpus_now=0, gpus_max=16)   # pure
    pool.num_gpus, pool.min_actors, pool.max_actors          # 1.0, 1, 16: grows onto GPU nodes as they join

`gpu_capacity()` (Ray) finds the GPUs: those in the cluster now, and the most its node types can
bring. The node types come from Ray's own cluster config in the GCS (reported by KubeRay and
autoscaler v2) or, for a `ray up` cluster (autoscaler v1), from the autoscaler config the head runs
(`~/ray_bootstrap_config.yaml`, where `ray up` writes it; `--autoscaler-config` names another).
A cluster whose GPU nodes scale from zero has no GPU at the start, so the pool asks for GPUs
whenever any node type has them; Ray Data's actor pool then starts `min_actors`, grows towards
`max_actors` while clips wait for a model, and lets idle actors go.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from pipeline.infer.config import InferConfig

MAX_ACTORS = 10_000  # the pool's ceiling when a node type has no max count


@dataclass(frozen=True)
class Pool:
    num_gpus: float  # per actor (0: CPU actors)
    min_actors: int
    max_actors: int
    device: str  # what the actors compute on: "cuda", or "cpu" (also on a GPU slot with --device cpu)
    gpus_now: float
    gpus_max: float


def plan_pool(cfg: InferConfig, device: str, gpus_now: float, gpus_max: float) -> Pool:
    """The actor pool of a run (pure): GPU actors whenever the cluster has or can add GPUs (unless
    `device` is "cpu" and no `actor_gpus` is given), one actor per `actor_gpus` of the most GPUs the
    cluster can hold (`cfg.actors` caps it), at least `cfg.min_actors` (never above the cap)."""
    gpus = max(gpus_now, gpus_max)
    if cfg.actor_gpus is not None:
        per = float(cfg.actor_gpus)
    else:
        per = 1.0 if gpus > 0 and device != "cpu" else 0.0
    if per > 0:
        cap = max(1, math.floor(gpus / per + 1e-9)) if gpus > 0 else 1
    else:
        cap = 1
    most = cfg.actors or min(cap, MAX_ACTORS)
    dev = device if device != "auto" else ("cuda" if per > 0 else "cpu")
    return Pool(per, min(cfg.min_actors, most), most, dev, gpus_now, gpus_max)


def gpus_in_autoscaler_config(config: dict[str, Any]) -> float:
    """The most GPUs the node types of an autoscaler (v1) config can bring: GPUs per node x
    `max_workers` per worker type (+ the head's)."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    total = 0.0
    for name, node in types.items():
        gpus = float((node.get("resources") or {}).get("GPU", 0))
        count = 1 if name == head else int(node.get("max_workers", 0))
        total += gpus * count
    return total


def gpu_capacity(autoscaler_config: str) -> tuple[float, float]:
    """(GPUs in the cluster now, the most GPUs its node types can bring); Ray must be initialized."""
    import ray

    now = float(ray.cluster_resources().get("GPU", 0))
    most = 0.0
    try:
        from ray._private.state import state

        found = state.get_max_resources_from_cluster_config() or {}
        most = float(found.get("GPU", 0) or 0)
    except Exception:  # noqa: BLE001 - no cluster config reported (e.g. a local Ray)
        most = 0.0
    path = os.path.expanduser(autoscaler_config) if autoscaler_config else ""
    if not most and path and os.path.exists(path):
        import yaml

        with open(path) as f:
            most = gpus_in_autoscaler_config(yaml.safe_load(f) or {})
    return now, most
