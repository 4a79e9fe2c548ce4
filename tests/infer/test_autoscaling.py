"""Inference on an autoscaling cluster whose GPU nodes scale from zero (slow).

A real Ray head with Ray's fake autoscaling provider (`tests/fake_cluster.py`: a head with 0 CPUs
as in cluster.yaml, a CPU node type 0..1 and a GPU node type 0..2, its own ports and temp dir), and
the job submitted as a user does, with the real `ray job submit` client through the dashboard:

- the pool asks for GPUs although the cluster has none at the start, the autoscaler adds GPU nodes
  for it, and the pool grows to every GPU node the type allows; every video comes out once;
- a GPU node lost in the middle of a run still gives every video exactly once;
- the README's submit command as it stands (`--working-dir .`, uploaded) on a one-node
  `ray start --head` cluster.

The fake provider's nodes share one session directory on this machine, so each node's runtime-env
agent unpacks an uploaded working dir into the same folder, and one that starts later replaces it
(`overwrite=True`) under the workers of the others (imports fail, a worker's cwd is gone): the
multi-node runs pass the repository in place (`local://`), as an image that holds the code does
(docs/RAY.md, the working-dir item).

Fake GPUs have no CUDA: the actors take GPU slots and compute on the CPU (`--device cpu
--actor-gpus 1`), each model call lasting at least 2 s (`--min-model-call-s`), so that the model,
not decoding, is the backlog the pool grows for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_cluster import FakeAutoscalingCluster
from infer_cases import CLIP_ARGS, read_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NODE_TYPES = {
    "cpu": {"resources": {"CPU": 2}, "min_workers": 0, "max_workers": 1},
    "gpu": {"resources": {"CPU": 1, "GPU": 1}, "min_workers": 0, "max_workers": 2},
}
SCORER = "ray::MapWorker(MapBatches(ClipScorer))"


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory):
    with FakeAutoscalingCluster(tmp_path_factory.mktemp("fake_cluster"), NODE_TYPES) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def videos(tmp_path_factory, short_videos) -> str:
    """A manifest of 16 short videos (3 clips each)."""
    d = tmp_path_factory.mktemp("corpus")
    lines = ["path,video_id"]
    for i in range(16):
        lines.append(f"{short_videos[i % len(short_videos)]},v{i:02d}")
    (d / "videos.csv").write_text("\n".join(lines) + "\n")
    return str(d / "videos.csv")


FAKE_GPU_ARGS = ["--batch-size", "2", "--device", "cpu", "--actor-gpus", "1", "--min-model-call-s", "2"]


def _submit(cluster: FakeAutoscalingCluster, ckpt: str, videos: str, out: Path, timeout: float,
            working_dir: str = f"local://{REPO}", args: tuple[str, ...] = (*CLIP_ARGS, *FAKE_GPU_ARGS)) -> str:
    """`ray job submit --working-dir ... -- python -m jobs.infer ...` (README, step 4) through the
    dashboard, with `args` (default: the fake-GPU flags); returns the job's output."""
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    cmd = [ray_bin, "job", "submit", "--address", cluster.dashboard_url, "--working-dir", working_dir, "--",
           "python", "-m", "jobs.infer", "--checkpoint", ckpt, "--videos", videos, "--output", str(out),
           *args, "--autoscaler-config", cluster.config_path]
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
           "RAY_AUTH_MODE": "token"}  # the head (ray start) uses token auth; the client reads ~/.ray/auth_token
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.timeout(600)
def test_the_pool_asks_for_gpus_from_zero_and_grows_to_every_gpu_node(fake_cluster, untrained_ckpt, videos,
                                                                     tmp_path):
    out = tmp_path / "out"
    stdout = _submit(fake_cluster, untrained_ckpt, videos, out, timeout=540)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["gpus_now"] == 0 and summary["model"]["gpus_max"] == 2  # none at the start
    assert summary["model"]["num_gpus"] == 1 and summary["model"]["max_actors"] == 2
    assert summary["this_run"]["model_nodes"] == 2, stdout[-3000:]  # the pool grew onto both GPU nodes
    rows = read_rows(str(out))
    assert sorted(r["video_id"] for r in rows) == [f"v{i:02d}" for i in range(16)]  # each video once
    assert all(r["status"] == "ok" and r["num_clips"] == 3 for r in rows)
    assert "[infer] videos 16/16" in stdout


@pytest.mark.timeout(600)
def test_a_gpu_node_lost_mid_run_still_gives_every_video_once(fake_cluster, untrained_ckpt, videos, tmp_path):
    out = tmp_path / "out"
    killed: list[int] = []

    done = threading.Event()

    def kill_a_gpu_node() -> None:  # once videos are done, the node of a model actor goes
        while not killed and not done.wait(0.5):
            scorers = []  # this cluster's model actors: their parents are its nodes' raylets
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
                if _cmdline(pid).startswith(SCORER):
                    raylet = _parent(pid)
                    if raylet and "raylet" in _cmdline(raylet) and fake_cluster.temp_dir in _cmdline(raylet):
                        scorers.append(raylet)
            parts = list((out / "parts").glob("part-*.parquet")) if (out / "parts").exists() else []
            if scorers and parts:
                os.kill(scorers[0], signal.SIGKILL)  # the node's raylet and, with it, the node
                killed.append(scorers[0])

    watcher = threading.Thread(target=kill_a_gpu_node, daemon=True)
    watcher.start()
    try:
        stdout = _submit(fake_cluster, untrained_ckpt, videos, out, timeout=540)
    finally:
        done.set()
        watcher.join(timeout=5)
    assert killed, "the run ended before a GPU node could be removed:\n" + stdout[-3000:]
    rows = read_rows(str(out))
    assert sorted(r["video_id"] for r in rows) == [f"v{i:02d}" for i in range(16)]  # each video once
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]


@pytest.mark.timeout(300)
def test_the_readme_submit_command_uploads_the_working_dir_to_a_ray_start_head(tmp_path_factory, untrained_ckpt,
                                                                              videos, tmp_path):
    """`ray job submit --working-dir .` as the README gives it, on a head that runs the work."""
    with FakeAutoscalingCluster(tmp_path_factory.mktemp("one_node"), {}, head_cpus=2) as cluster:
        out = tmp_path / "out"
        stdout = _submit(cluster, untrained_ckpt, videos, out, timeout=240, working_dir=".", args=tuple(CLIP_ARGS))
    rows = read_rows(str(out))
    assert sorted(r["video_id"] for r in rows) == [f"v{i:02d}" for i in range(16)], stdout[-3000:]
    assert all(r["status"] == "ok" for r in rows) and "[infer] videos 16/16" in stdout
