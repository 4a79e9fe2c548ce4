"""Shared fixtures: a real local Ray, a real S3 endpoint on loopback, synthetic videos.

Order matters: `s3_server` sets the standard AWS_* variables in this process before `ray_local`
starts Ray, so every Ray worker inherits them (as on a real cluster, where they come from the
node's environment or instance role).
"""

from __future__ import annotations

import os
import socket

import pytest

# ---------------------------------------------------------------- S3 on loopback (moto server)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP endpoint on 127.0.0.1 (moto's ThreadedMotoServer); yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def s3_bucket(s3_server, request):
    """A fresh, empty bucket per test; yields its name."""
    import boto3

    name = "test-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40]
    name = name.strip("-")
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=name)
    yield name
    bucket = boto3.resource("s3", endpoint_url=s3_server).Bucket(name)
    bucket.objects.all().delete()
    bucket.delete()


# ---------------------------------------------------------------- local Ray


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One real local Ray for the whole session (2 CPUs, as on CI)."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=int(os.environ.get("TEST_RAY_CPUS", "2")), include_dashboard=False,
             configure_logging=False, log_to_driver=True)
    yield ray
    ray.shutdown()
