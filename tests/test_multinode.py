"""A worker node lost mid-job, on a real multi-node Ray (`ray.cluster_utils.Cluster`: a head with
0 CPUs and three 1-CPU worker nodes, as a cloud cluster with a CPU-less head): slow.

Each job runs as its own driver process (`tests/multinode_cases.py`) against the cluster; this
process owns the cluster and removes the node the driver names once the job is under way. Every
job must complete in that one run and deliver every video / step exactly once:

- preprocess: a node running shard tasks goes -> every clip row once, no failed video;
- inference: the model actor's node goes -> the actor restarts elsewhere, its in-flight batches
  are sent again, every video has one `ok` row, the predictions of a clean run;
- training: a training worker's node goes -> Ray Train restarts the group from the latest
  checkpoint on the remaining nodes, every step is logged once and the run ends at its last step.

Elastic training has its own cluster: `tests/test_multinode_elastic.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = 3


def new_cluster():
    """A head with 0 CPUs (its workers come with `_fill` or the test)."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # a lost node is noticed after 3 missed health checks 0.5 s apart (Ray's default: 5 x 3 s),
    # which only shortens the wait: the jobs do not depend on it
    return Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 150 * 2**20,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}})


@pytest.fixture(scope="module")
def cluster():
    c = new_cluster()
    yield c
    c.shutdown()


def _fill(cluster, workers: int = WORKERS) -> None:
    """Bring the cluster back to WORKERS 1-CPU worker nodes (a test removed one)."""
    while len(cluster.list_all_nodes()) - 1 < workers:
        cluster.add_node(num_cpus=1, object_store_memory=150 * 2**20)
    cluster.wait_for_nodes()


def _run(cluster, name: str, work, timeout: float = 400, node_args: dict | None = None,
         added: list | None = None, workers: int = WORKERS) -> dict:
    """Run scenario `name` as a driver process; remove the node it names, add one (`node_args`,
    appended to `added`) when it asks; return its result."""
    _fill(cluster, workers)
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONPATH": ROOT, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    log = open(work / "driver.log", "w")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "multinode_cases.py"), name, str(work)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    removed, deadline = False, time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            request = work / "remove_node"
            if not removed and request.exists():
                node_id = request.read_text()
                node = next(n for n in cluster.list_all_nodes() if n.node_id == node_id)
                cluster.remove_node(node, allow_graceful=False)  # the node vanishes, as a lost VM
                (work / "node_removed").write_text("1")
                removed = True
            if node_args is not None and (work / "add_node").exists() and not (work / "node_added").exists():
                node = cluster.add_node(**node_args)
                if added is not None:
                    added.append(node)
                cluster.wait_for_nodes()
                (work / "node_added").write_text("1")
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (work / "driver.log").read_text()
    assert proc.returncode == 0, text[-4000:]
    assert removed, "the job ended before the node could be removed:\n" + text[-2000:]
    result = json.loads((work / "result.json").read_text())
    print(f"{name}: {result['seconds']} s")
    return result


def test_preprocess_loses_a_node_and_writes_every_clip_once(cluster, tmp_path):
    r = _run(cluster, "preprocess", tmp_path)
    s = r["summary"]
    assert r["rc"] == 0 and (s["videos"], s["videos_ok"], s["videos_failed"]) == (16, 16, 0)
    assert r["clip_rows"] == s["clips"] == 16 * 2 and r["duplicates"] == 0
    assert r["videos_with_clips"] == r["manifest_ids"]
    assert sorted(s["files"]) == r["files_on_disk"]  # no file of an interrupted attempt left over


def test_inference_loses_the_model_actors_node_and_scores_every_video_once(cluster, tmp_path):
    r = _run(cluster, "infer", tmp_path)
    assert sorted(r["ids"]) == r["expected_ids"]  # one row per video
    assert r["status"] == {"ok": 12}, r["errors"]
    assert r["clips"] == 12 * 4 and r["same_as_clean"]  # the restarted model scores as a clean run does
    assert r["model_nodes_after"] and r["model_node"] not in r["model_nodes_after"]  # restarted elsewhere


def test_training_loses_a_workers_node_and_restarts_on_the_others(cluster, tmp_path):
    r = _run(cluster, "train", tmp_path)
    # resumed from checkpoint 2 or 4 (4 is on disk before Ray Train registers it), not restarted
    assert r["starts"][0] is None and len(r["starts"]) == 2 and r["starts"][1] in (2, 4), r["starts"]
    assert r["train_steps"] == list(range(1, 10)), "every step once: none lost or repeated"
    assert r["end"] == [9] and r["model"]
