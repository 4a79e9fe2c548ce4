"""cluster.yaml is valid for Ray's own launcher schema and matches the project's pins."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_ray_schema(cluster):
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)  # raises jsonschema.ValidationError on any bad field


def test_head_runs_no_tasks_and_gpus_scale_from_zero(cluster):
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"] == {"CPU": 0}
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["min_workers"] == 0 for t in gpu_types)
    spot = [t for t in types.values() if "InstanceMarketOptions" in t["node_config"]]
    assert spot and all(t["resources"].get("GPU", 0) == 0 for t in spot), "decode nodes are CPU spot"
    assert sum(t.get("max_workers", 0) for t in types.values()) >= cluster["max_workers"] > 0


def test_image_and_pins_match_the_project(cluster):
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)$", dockerfile, re.M).group(1)
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-gpu", base)
    assert m, f"build on a versioned rayproject/ray GPU image, got {base}"
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert cluster["docker"]["image"].endswith(f"/video-transformers:{version}"), "the project's image"
    torch_pin = re.search(r"^TORCH \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert f'ARG TORCH="{torch_pin} ' in dockerfile, "the image's torch is the Makefile's"
    assert m.group(1) == ray.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"ray[default,train,data]=={ray.__version__}"' in pyproject
    req = (ROOT / "deploy" / "requirements-cluster.txt").read_text()
    assert f"ray[default,train,data]=={ray.__version__}" in req
    # every requirement is pinned exactly
    lines = [l for l in req.splitlines() if l.strip() and not l.startswith("#")]
    assert lines and all("==" in l for l in lines), lines
    names = {re.split(r"[\[=]", line)[0] for line in lines}
    assert {"safetensors", "gcsfs", "s3fs"} <= names, "every format and object store the README offers"
    minimum = re.search(r'requires-python = ">=(\d+)\.(\d+)"', pyproject)
    assert (int(m.group(2)), int(m.group(3))) >= (int(minimum.group(1)), int(minimum.group(2)))
    assert (int(m.group(2)), int(m.group(3))) == sys.version_info[:2], "CI and image share Python"


def test_no_secrets_in_cluster_yaml():
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|AWS_SECRET", text, re.I)


def _worker_request(scale) -> dict[str, float]:
    """What one Ray Train worker asks for (Ray's defaults: 1 CPU, plus 1 GPU with use_gpu)."""
    req = {"CPU": 1.0, **({"GPU": 1.0} if scale.use_gpu else {})}
    req.update({k: float(v) for k, v in scale.resources_per_worker.items()})
    return req


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_each_train_config_fits_the_cluster(cluster, config):
    from pipeline.config import load_config
    from pipeline.train import TrainJobConfig

    cfg = load_config(TrainJobConfig, ROOT / "configs" / config)
    req = _worker_request(cfg.scale)
    if not cfg.scale.use_gpu:
        return  # CPU configs (debug) run on a laptop or any CPU node
    capacity = 0
    for name, node in cluster["available_node_types"].items():
        res = node["resources"]
        per_node = min(int(res.get(k, 0) // v) for k, v in req.items() if v > 0)
        capacity += per_node * node.get("max_workers", 0)
    assert capacity >= cfg.scale.num_workers, (
        f"{config}: {cfg.scale.num_workers} workers of {req} do not fit cluster.yaml (room for {capacity})")
