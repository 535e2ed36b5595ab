"""Swarm e2e fixtures: the docker tests' engine, offline image and moto store, plus a real
single-node swarm on loopback (left again at teardown) and extra versions that must fail."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import DeployConfig, build_config
from tests.docker.conftest import aws_env, docker_client, moto, s3_versions, serving_image  # noqa: F401
from tests.rollout.models import MODEL, Versions
from tests.support.procs import free_port

UNLOADABLE, TAMPERED = 7, 8


@pytest.fixture(scope="session", autouse=True)
def migrate_queued_connections() -> Iterator[None]:
    """net.ipv4.tcp_migrate_req=1 on this host while the swarm tests run (restored after), as the
    README asks of swarm nodes: a replica leaving the shared port's SO_REUSEPORT group hands the
    connections already queued on its listener to a sibling instead of resetting them."""
    from serving.agent import MIGRATE_REQ

    path = Path(MIGRATE_REQ)
    if not path.exists():
        yield  # kernel < 5.14: queued connections are reset on drain (see the README)
        return
    before = path.read_text()
    path.write_text("1")
    try:
        yield
    finally:
        path.write_text(before)


@pytest.fixture(scope="session")
def swarm(docker_client) -> Iterator[Any]:  # noqa: F811 - the imported fixture
    """A one-node swarm on 127.0.0.1 with a non-private address pool (see shared/README.md)."""
    if (docker_client.info().get("Swarm") or {}).get("LocalNodeState") == "active":
        pytest.fail("the engine is already in a swarm this test did not create; leave it first")
    docker_client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377",
                             default_addr_pool=["198.19.0.0/16"], subnet_size=24)
    try:
        yield docker_client
    finally:
        docker_client.swarm.leave(force=True)


@pytest.fixture(scope="session")
def bad_versions(s3_versions, tmp_path_factory) -> tuple[Versions, dict]:  # noqa: F811
    """v7: a committed version whose graph is garbage (fails to load); v8: committed, then one
    object overwritten in the store behind the manifest's back (sha256 mismatch)."""
    import boto3

    from pipeline.config import StorageConfig
    from pipeline.storage import open_store
    from pipeline.storage.publish import push_version

    versions, storage = s3_versions
    store = open_store(StorageConfig(**storage))
    root = tmp_path_factory.mktemp("swarm-bad")
    unloadable = root / str(UNLOADABLE)
    shutil.copytree(versions.dirs[2], unloadable)
    (unloadable / "saved_model.pb").write_bytes(b"not a saved model")
    push_version(store, unloadable, MODEL, UNLOADABLE, create=True)
    push_version(store, versions.dirs[2], MODEL, TAMPERED, create=True)
    s3 = boto3.client("s3", endpoint_url=storage["endpoint_url"], region_name="us-east-1")
    s3.put_object(Bucket="tfr-rollout", Key=f"models/{MODEL}/{TAMPERED}/saved_model.pb", Body=b"swapped")
    return versions, storage


def swarm_config(tmp: Path, image: str, storage: dict, **rollout: object) -> DeployConfig:
    port = free_port()
    return build_config({
        "storage": storage,
        "rollout": {"target": "swarm", "image": image, "pull_image": False, "grpc_port": port,
                    "service_name": f"tfr-{uuid.uuid4().hex[:6]}", "replicas": 3, "swarm_monitor_s": 3.0,
                    "swarm_health_interval_s": 1.0, "load_timeout_s": 90, "start_timeout_s": 120, **rollout},
        "verify": {"endpoint": f"127.0.0.1:{port}", "deadline_s": 15.0, "atol": 1e-5},
        "run": {"workdir": str(tmp / "work")},
    })


@pytest.fixture
def swarm_cfg(tmp_path: Path, swarm, serving_image: str, bad_versions) -> Iterator[DeployConfig]:  # noqa: F811
    cfg = swarm_config(tmp_path, serving_image, bad_versions[1])
    yield cfg
    from pipeline.targets.swarm import SwarmTarget

    SwarmTarget(cfg.rollout, swarm).purge()
