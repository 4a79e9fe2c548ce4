"""A real Ray head with Ray's fake autoscaling node provider, started and stopped by PID.

    with FakeAutoscalingCluster(tmp_path, worker_types) as c:
        c.address            # "127.0.0.1:<port>": RAY_ADDRESS for drivers
        c.dashboard_url      # "http://127.0.0.1:<port>": for `ray job submit`
        c.config_path        # the autoscaler config the head runs

Ray's own `ray.cluster_utils.AutoscalingCluster.start()` runs `ray stop --force`, which ends every
Ray process on the machine, and uses the default ports. This one runs `ray start --head --block`
with the fake provider (`RAY_FAKE_CLUSTER=1`), its own free ports and its own temp dir, in a new
process group; the worker nodes the autoscaler adds are started by the head's monitor process. On
exit it kills that process group and every process whose command line names its temp dir (the
nodes the monitor started), and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HEAD_TYPE = "ray.head.default"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaler_config(worker_types: dict[str, Any], gcs_address: str, *, idle_timeout_minutes: float = 0.2,
                      head_cpus: int = 0) -> dict[str, Any]:
    """An autoscaler config for the fake provider: a head with `head_cpus` CPUs (0 as the shipped
    cluster.yaml) and `worker_types` (`{name: {resources, min_workers, max_workers}}`)."""
    types = {HEAD_TYPE: {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0}}
    for name, t in worker_types.items():
        types[name] = {"node_config": {}, **t}
    return {
        "cluster_name": "fake_autoscaling", "max_workers": sum(t["max_workers"] for t in worker_types.values()),
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": types, "head_node_type": HEAD_TYPE, "auth": {}, "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes, "docker": {}, "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


class FakeAutoscalingCluster:
    def __init__(self, work: Path, worker_types: dict[str, Any], *, idle_timeout_minutes: float = 0.2,
                 start_timeout_s: float = 120, head_cpus: int = 0):
        self.work = Path(work)
        self.temp_dir = tempfile.mkdtemp(prefix="rayfc-", dir="/tmp")  # short: Ray's socket paths are <= 107 bytes
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.config_path = str(self.work / "autoscaler.yaml")
        config = autoscaler_config(worker_types, self.address, idle_timeout_minutes=idle_timeout_minutes,
                                   head_cpus=head_cpus)
        self.head_cpus = head_cpus
        Path(self.config_path).write_text(yaml.safe_dump(config))
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "FakeAutoscalingCluster":
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        cmd = [ray_bin, "start", "--head", "--block", f"--autoscaling-config={self.config_path}",
               "--node-ip-address=127.0.0.1", f"--port={self.port}", f"--num-cpus={self.head_cpus}", "--num-gpus=0",
               f"--temp-dir={self.temp_dir}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
               f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
               f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
               f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
               "--object-store-memory=100000000", "--disable-usage-stats"]
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # jobs' `python` is this venv's, as on a node of the image
               "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}
        env.pop("RAY_ADDRESS", None)
        self.log = open(self.work / "head.log", "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the fake cluster's head did not start:\n" + (self.work / "head.log").read_text())
            if self._answers():
                return self
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise TimeoutError(f"the fake cluster's head did not answer within {self.start_timeout_s} s")

    def _answers(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=5) as r:
                return r.status == 200
        except urllib.error.HTTPError:  # it answers (e.g. 401: the cluster's token auth)
            return True
        except OSError:
            return False

    def pids(self) -> list[int]:
        """The processes of this cluster: those whose command line names its temp dir or ports."""
        marks = (self.temp_dir, f":{self.port}")
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(m in cmdline for m in marks) and int(pid) != os.getpid():
                out.append(int(pid))
        return out

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        for _ in range(3):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def nodes(address: str) -> list[dict[str, Any]]:
    """The alive nodes of the cluster at `address` as `ray list nodes` gives them (a subprocess, so
    that this process never joins the cluster)."""
    code = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
            "print(json.dumps([n for n in ray.nodes() if n['Alive']]))") % address
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []
