"""deploy/kuberay/: the RayCluster and RayJobs validate against KubeRay's CRD schemas (v1.7.0,
tests/fixtures/kuberay/), scale GPUs from zero, run the project's image, and their entrypoints
parse with the jobs' own parsers."""

from __future__ import annotations

import copy
import importlib
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.cli import parse_config, job_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kuberay"
JOBS = {"preprocess": "jobs.preprocess", "train": "jobs.train", "infer": "jobs.infer"}


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((ROOT / "tests" / "fixtures" / "kuberay" / f"{kind}.v1.schema.json").read_text())
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("*.yaml")))
def test_manifests_validate_against_the_crd_schema(name):
    doc = _load(name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in ("RayCluster", "RayJob")
    _validator(doc["kind"].lower()).validate(doc)


def test_the_schema_check_can_fail():
    doc = copy.deepcopy(_load("raycluster.yaml"))
    doc["spec"]["workerGroupSpecs"][0]["minReplicas"] = "none"
    with pytest.raises(jsonschema.ValidationError):
        _validator("raycluster").validate(doc)
    job = copy.deepcopy(_load("rayjob-train.yaml"))
    job["spec"]["entrypointNumCpus"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        _validator("rayjob").validate(job)


def test_cluster_autoscales_gpus_from_zero_with_the_project_image():
    spec = _load("raycluster.yaml")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = [g for g in groups.values()
           if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu and all(g["minReplicas"] == 0 == g["replicas"] for g in groups.values())
    image = yaml.safe_load((ROOT / "cluster.yaml").read_text())["docker"]["image"]
    pods = [spec["headGroupSpec"]] + list(groups.values())
    assert {c["image"] for p in pods for c in p["template"]["spec"]["containers"]} == {image}


def _gpu_pod() -> dict[str, float]:
    spec = _load("raycluster.yaml")["spec"]
    g = next(g for g in spec["workerGroupSpecs"]
             if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"])
    limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
    return {"CPU": float(limits["cpu"]), "GPU": float(limits["nvidia.com/gpu"]), "replicas": g["maxReplicas"]}


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_each_gpu_train_config_fits_the_gpu_group(config):
    from pipeline.config import load_config
    from pipeline.train import TrainJobConfig

    scale = load_config(TrainJobConfig, ROOT / "configs" / config).scale
    if not scale.use_gpu:
        return
    pod = _gpu_pod()
    per_pod = min(int(pod[k] // float(v)) for k, v in scale.resources_per_worker.items() if float(v) > 0)
    assert per_pod >= 1 and per_pod * pod["replicas"] >= scale.num_workers


@pytest.mark.parametrize("job", sorted(JOBS))
def test_rayjobs_run_on_the_cluster_and_their_entrypoints_parse(job):
    doc = _load(f"rayjob-{job}.yaml")
    cluster = _load("raycluster.yaml")["metadata"]["name"]
    assert doc["spec"]["clusterSelector"] == {"ray.io/cluster": cluster}
    assert doc["spec"]["entrypointNumCpus"] >= 1
    argv = shlex.split(doc["spec"]["entrypoint"].replace("/home/ray/app/", f"{ROOT}/"))
    assert argv[:3] == ["python", "-m", JOBS[job]]
    module = importlib.import_module(JOBS[job])
    cls = {"preprocess": "PreprocessConfig", "train": "TrainJobConfig", "infer": "InferJobConfig"}[job]
    cls = getattr(module, cls)
    parse_config(cls, job_parser(cls, prog=job, doc="x"), argv[3:])  # every flag exists, every value fits
