"""pipeline.raystart: every job says which Ray it joins or starts, and never waits unbounded for
a Ray that is not there (a closed port, a silent server, a cluster `ray start` recorded that has
gone): one line naming RAY_ADDRESS and how to start a local Ray, exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.raystart import probe

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def _run(args: list[str], env: dict[str, str | None], timeout: float = 60) -> subprocess.CompletedProcess:
    """`python args` with `env` over this process's (None: unset)."""
    env = {k: v for k, v in {**os.environ, "PYTHONPATH": str(ROOT), **env}.items() if v is not None}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.timeout(30)
def test_a_closed_local_port_fails_at_once_naming_ray_address():
    port = _closed_port()
    with pytest.raises(ConfigError) as e:
        probe(f"127.0.0.1:{port}", 600.0, "RAY_ADDRESS")  # a 10-minute bound, yet it returns at once
    text = str(e.value)
    assert f"RAY_ADDRESS=127.0.0.1:{port}" in text and "RAY_ADDRESS=local" in text and "ray start --head" in text
    assert "\n" not in text


@pytest.mark.timeout(30)
def test_a_server_that_is_not_ray_is_given_up_after_the_bound():
    with socket.socket() as server:  # accepts connections, never speaks gRPC
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    accepted.append(server.accept()[0])
                except OSError:
                    pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            with pytest.raises(ConfigError) as e:
                probe(f"127.0.0.1:{server.getsockname()[1]}", 2.0, "RAY_ADDRESS")
        finally:
            stop.set()
            thread.join()
            for conn in accepted:
                conn.close()
    text = str(e.value)
    assert "did not answer within 2 s" in text and "--ray-timeout-s" in text and "RAY_ADDRESS=local" in text


@pytest.mark.timeout(30)
def test_an_unreachable_remote_address_is_given_up_after_the_bound():
    with pytest.raises(ConfigError) as e:  # TEST-NET-3: never routed
        probe("203.0.113.7:6379", 1.5, "RAY_ADDRESS")  # (a proxy may answer: not as Ray)
    assert "RAY_ADDRESS=203.0.113.7:6379: Ray did not answer within 1.5 s" in str(e.value)


@pytest.mark.timeout(120)
def test_a_job_ends_with_exit_2_when_ray_address_is_closed(tmp_path):
    """The demo joins (or starts) Ray before it writes anything: a dead RAY_ADDRESS ends it with one
    line, exit 2, and nothing generated."""
    out = tmp_path / "demo"
    proc = _run(["-m", "jobs.demo", "--output", str(out), "--ray-timeout-s", "5"],
                {"RAY_ADDRESS": f"127.0.0.1:{_closed_port()}"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: RAY_ADDRESS=127.0.0.1:") and "RAY_ADDRESS=local" in err[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "[jobs.demo] Ray: joining the cluster at 127.0.0.1:" in proc.stdout
    assert not (out / "data").exists()


@pytest.mark.timeout(120)
def test_a_shard_job_ends_with_exit_2_when_ray_does_not_answer(tmp_path):
    """jobs.preprocess joins Ray only once it has work; a RAY_ADDRESS where something answers but
    no Ray does (a port that accepts and says nothing) is given up after --ray-timeout-s."""
    man = tmp_path / "m.csv"
    man.write_text("path,label\n/nowhere/a.mp4,up\n")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        proc = _run(["-m", "jobs.preprocess", "--manifest", str(man), "--output", str(tmp_path / "out"),
                     "--ray-timeout-s", "3"], {"RAY_ADDRESS": f"127.0.0.1:{silent.getsockname()[1]}"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Ray did not answer within 3 s" in err[0] and "RAY_ADDRESS=local" in err[0], err
    assert "[jobs.preprocess] Ray: joining the cluster at 127.0.0.1:" in proc.stdout


@pytest.mark.timeout(120)
def test_a_stale_ray_start_record_is_detected_at_once(tmp_path):
    """`ray start` recorded a cluster that has gone (Ray's own `ray.init()` retries it for minutes)."""
    temp = tmp_path / "t"
    (temp / "ray").mkdir(parents=True)
    port = _closed_port()
    (temp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
    env = {"RAY_TMPDIR": str(temp), "RAY_ADDRESS": ""}
    proc = _run(["-m", "jobs.demo", "--output", str(tmp_path / "demo"), "--ray-timeout-s", "600"], env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port} (the cluster recorded by `ray start`" in err[0], err
    assert "no Ray listens there" in err[0] and "RAY_ADDRESS=local" in err[0]


@pytest.mark.timeout(180)
def test_joins_the_running_cluster_named_by_ray_address(ray_local):
    address = ray_local.get_runtime_context().gcs_address
    code = ("from pipeline.raystart import connect; import ray; a = connect(30, job='jobs.x'); "
            "print('joined', a, ray.cluster_resources().get('CPU'))")
    proc = _run(["-c", code], {"RAY_ADDRESS": address})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"[jobs.x] Ray: joining the cluster at {address} (RAY_ADDRESS)"
    assert f"joined {address} " in proc.stdout
    assert " INFO " not in proc.stdout + proc.stderr


LOCAL_RAY = """
import ray
from pipeline.raystart import connect

connect(30, job="jobs.x")

@ray.remote
def nodes():
    from ray.util.state import list_nodes
    return [n.node_id for n in list_nodes()]

print("nodes", ray.get(nodes.remote()) == [ray.get_runtime_context().get_node_id()])

@ray.remote
def split():  # Ray Data in a worker, as in Ray Train's SplitCoordinator
    import ray.data
    print("[x] progress from a worker")
    return ray.data.range(8).map_batches(lambda b: b).count()

print("rows", ray.get(split.remote()), ray.data.range(4).map_batches(lambda b: b).count())
"""


@pytest.mark.timeout(180)
def test_a_local_ray_keeps_ray_s_info_lines_off_and_its_state_api_its_own(ray_local):
    """Another Ray runs on this machine (the test session's): the state API inside a task of a new
    local Ray (what Ray Train's controller queries) reaches that new Ray, not "multiple instances";
    Ray Data's INFO lines (driver and workers) stay off the console, a worker's prints do not."""
    proc = _run(["-c", LOCAL_RAY], {"RAY_ADDRESS": "local", "RAY_DATA_LOGGING_CONFIG": None}, timeout=150)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert proc.stdout.splitlines()[0] == "[jobs.x] Ray: starting a local Ray (RAY_ADDRESS=local)"
    assert "nodes True" in proc.stdout and "rows 8 4" in proc.stdout
    assert "[x] progress from a worker" in out  # the driver still prints its workers' output
    assert " INFO " not in out and "Starting execution of Dataset" not in out, out[-3000:]
