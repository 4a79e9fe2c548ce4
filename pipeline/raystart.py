"""Which Ray a job runs on, said in one line, and reached within a bound.

    address = connect(cfg.ray_timeout_s, job="jobs.train")   # raises ConfigError

The Ray a job means is Ray's own rule: `RAY_ADDRESS` if set (`local` starts a fresh local Ray),
else the cluster recorded by the last `ray start` on this machine
(`<ray temp dir>/ray_current_cluster`), else a new local Ray. `ray.init` on an address nobody
answers retries the GCS for many minutes, so the address is probed first (TCP, then one call of
the GCS's own gRPC API) for at most `timeout_s`; a local address that refuses connections and
that no Ray process on this machine serves (the cluster `ray start` recorded has gone) fails at
once. Either way the job ends with one line naming RAY_ADDRESS and how to start a local Ray.

A local Ray is started with Ray's own INFO console lines off (`logging_level=WARNING`, Ray Data's
console at WARNING: `quiet_ray_data`; the driver still prints its workers' output) and with the
dashboard, which Ray Train's state API queries. Its processes are told their own dashboard
(`RAY_API_SERVER_ADDRESS`) so that the state API never guesses among other Ray instances running
on the same machine.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time

from pipeline.config import ConfigError

_RETRY_S = 0.5  # pause between connection attempts while a cluster may still be starting
# Ray Train's own state export reads a deprecated Ray Data option in every run (nothing a user can change)
_RAY_INTERNAL_WARNING = "ignore:`ExecutionOptions.exclude_resources` is deprecated"
_HINT = ("set RAY_ADDRESS=local to start a local Ray, point RAY_ADDRESS at a running cluster (host:port), "
         "or start one with `ray start --head`")


def connect(timeout_s: float, *, job: str) -> str:
    """Join the Ray the user meant, or start a local one; print one line saying which and
    return the GCS address. Raises ConfigError when the address cannot be reached within
    `timeout_s` seconds. Does nothing but return the address when Ray is already initialized."""
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    address, source = target()
    if address is None:
        print(f"[{job}] Ray: starting a local Ray ({source})", flush=True)
        return _start_local()
    print(f"[{job}] Ray: joining the cluster at {address} ({source})", flush=True)
    probe(address, timeout_s, source)
    quiet_ray_data()  # this driver's console only: the cluster's workers keep their own settings
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except Exception as e:  # noqa: BLE001 - a token, a version mismatch: the user's to fix, in one line
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"{_where(address, source)}: cannot join ({type(e).__name__}: {first}); {_HINT}") from None
    return ray.get_runtime_context().gcs_address


def target() -> tuple[str | None, str]:
    """(address to join or None to start a local Ray, where that choice came from)."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env == "local":
        return None, "RAY_ADDRESS=local"
    if env and env != "auto":
        return env, "RAY_ADDRESS"
    recorded = _recorded_address()
    if recorded:
        return recorded, f"the cluster recorded by `ray start` in {_address_file()}"
    if env == "auto":
        raise ConfigError(f"RAY_ADDRESS=auto: no cluster recorded by `ray start` in {_address_file()}; {_HINT}")
    return None, "no RAY_ADDRESS, no cluster recorded by `ray start`"


def probe(address: str, timeout_s: float, source: str) -> None:
    """Return once a Ray GCS answers at `address` (a Ray Client address `ray://`: once its port
    accepts); ConfigError when none does within `timeout_s`, or at once when a local address
    refuses connections and no Ray on this machine serves it."""
    host, port = _host_port(address, source)
    client = address.startswith("ray://")
    deadline = time.monotonic() + max(0.0, timeout_s)
    why = "no answer"
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.05, min(left, 5.0))):
                pass
        except ConnectionRefusedError:
            why = "connection refused"
            if _is_local(host) and not _served_here(port):
                raise ConfigError(f"{_where(address, source)}: no Ray listens there (connection refused, and no Ray "
                                  f"process on this machine serves that port); {_HINT}") from None
        except OSError as e:  # timeout, unreachable host, unknown name
            why = e.strerror or type(e).__name__
        else:
            fault = None if client else _gcs_fault(host, port, max(0.05, deadline - time.monotonic()))
            if fault is None:
                return
            why = fault
        if time.monotonic() + _RETRY_S >= deadline:
            raise ConfigError(f"{_where(address, source)}: Ray did not answer within {timeout_s:g} s ({why}; "
                              f"--ray-timeout-s sets the wait); {_HINT}")
        time.sleep(_RETRY_S)


def _start_local() -> str:
    """A new local Ray with the dashboard; its processes learn the dashboard's address."""
    import ray

    quiet_ray_data()  # before the raylet starts: its workers inherit the setting
    port = _free_port()
    warnings = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), _RAY_INTERNAL_WARNING) if w)
    env = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}", "PYTHONWARNINGS": warnings}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # for the raylet and its workers, which copy this environment at their start
    try:
        ray.init(address="local", logging_level=logging.WARNING, dashboard_port=port)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return ray.get_runtime_context().gcs_address


def quiet_ray_data() -> None:
    """Ray Data's console at WARNING: its INFO lines (every dataset's start, plan and end, in the
    driver and in the workers that run datasets) stay in its log file (`ray-data.log` in the
    session's logs). Through RAY_DATA_LOGGING_CONFIG, which Ray Data reads when it is imported, so
    processes started after this inherit it; a config the user set is left alone."""
    if os.environ.get("RAY_DATA_LOGGING_CONFIG"):
        return
    import copy
    import tempfile

    import yaml
    from ray.data._internal import logging as data_logging

    config = copy.deepcopy(data_logging.DEFAULT_CONFIG)
    config["handlers"]["console"]["level"] = "WARNING"
    # the notice that progress bars are off, which jobs choose when stderr is no terminal
    config["loggers"]["ray.data._internal.progress"] = {"level": "ERROR"}
    path = os.path.join(tempfile.gettempdir(), f"pipeline-ray-data-logging-{os.getuid()}.yaml")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(config, f)
    os.replace(tmp, path)
    os.environ["RAY_DATA_LOGGING_CONFIG"] = path
    data_logging.configure_logging()  # this process: Ray Data may be imported already


def _where(address: str, source: str) -> str:
    return f"RAY_ADDRESS={address}" if source == "RAY_ADDRESS" else f"{address} ({source})"


def _host_port(address: str, source: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{_where(address, source)}: expected host:port (or local); {_HINT}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _gcs_fault(host: str, port: int, timeout_s: float) -> str | None:
    """None when a Ray GCS answers at host:port within `timeout_s` (its cluster id, or its refusal
    of a call without the cluster's token: Ray either way), else why not."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
        return None
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAUTHENTICATED:
            return None
        return f"no Ray GCS answered there: {e.code().name.lower()}"
    finally:
        channel.close()


def _is_local(host: str) -> bool:
    """`host` names this machine (loopback, or one of its interface addresses)."""
    try:
        ip = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return False
    if ip.is_loopback:
        return True
    import psutil

    return any(a.address == str(ip) for addrs in psutil.net_if_addrs().values() for a in addrs)


def _served_here(port: int) -> bool:
    """A Ray node process on this machine names a GCS at `port` (a cluster that may be starting)."""
    from ray._private.services import find_gcs_addresses

    return any(a.rsplit(":", 1)[-1] == str(port) for a in find_gcs_addresses())


def _address_file() -> str:
    from ray._common.utils import get_ray_address_file

    return get_ray_address_file(None)


def _recorded_address() -> str | None:
    from ray._private.utils import read_ray_address

    return read_ray_address(None) or None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
