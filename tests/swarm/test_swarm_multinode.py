"""Two Docker engines in separate network namespaces, one swarm: a global model service with a
replica on each node, a rolling update across both under load, verified through both addresses.

The replicas listen on 0.0.0.0 inside their own namespace: its only interfaces are loopback
and the veth on the test's own bridge (198.19.250.0/24), so nothing is reachable from outside."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from pipeline.config import StorageConfig, build_config
from pipeline.rollout.swarm_run import swarm_engine
from pipeline.targets.swarm import SwarmTarget
from pipeline.verify.compare import Tolerance
from pipeline.verify.golden import load_golden
from pipeline.verify.runner import Endpoint, ServedModel, verify_served
from serving.client import PredictionClient
from tests.rollout.models import MODEL
from tests.support.engine import unavailable
from tests.support.golden_inputs import inputs
from tests.support.procs import free_port
from tests.swarm.load import FleetLoad

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(tmp_path: Path, serving_image: str, docker_client, aws_env):
    from tests.swarm.multinode import two_engine_swarm

    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nsenter"):
        unavailable("network namespaces need root, iproute2 and nsenter")
    with two_engine_swarm(tmp_path, serving_image, docker_client) as c:
        yield c


def served_version(address: str, port: int, x) -> int:
    with PredictionClient(f"{address}:{port}", deadline=15) as client:
        return client.predict_detailed(MODEL, x, label="stable", check_signature=False).version


def test_two_engines_one_swarm_rolls_a_global_service_across_both_nodes(cluster, s3_versions, tmp_path: Path):
    from pipeline.storage import open_store
    from pipeline.storage.publish import push_version

    versions, _ = s3_versions
    storage = {"uri": "s3://tfr-multinode/models", "endpoint_url": cluster.store_endpoint, "create_bucket": True,
               "max_attempts": 2, "connect_timeout_s": 2.0}
    store = open_store(StorageConfig(**storage))
    for v in (1, 2):
        push_version(store, versions.dirs[v], MODEL, v, create=True)
    port = free_port()
    cfg = build_config({"storage": storage, "rollout": {
        "target": "swarm", "image": "tfrollout/model-server:tf2.21.0", "grpc_port": port, "host": "0.0.0.0",
        "swarm_mode": "global", "service_name": f"tfr-{uuid.uuid4().hex[:6]}", "swarm_monitor_s": 3.0,
        "swarm_health_interval_s": 1.0, "load_timeout_s": 90, "start_timeout_s": 120}})
    manager = cluster.clients[0]
    target = SwarmTarget(cfg.rollout, manager)
    x = inputs(versions)
    try:
        first = swarm_engine(cfg, target).rollout(MODEL, 1)
        assert first.ok and len(first.replicas) == 2, first
        running = [t for t in target.tasks(MODEL) if t["DesiredState"] == "running"]
        assert len({t["NodeID"] for t in running}) == 2  # one replica per engine
        assert [served_version(a, port, x) for a in cluster.addresses] == [1, 1]

        loads = [FleetLoad(f"{a}:{port}", MODEL, "stable", x, clients=8) for a in cluster.addresses]
        for load in loads:
            load.__enter__()
        try:
            time.sleep(1.0)
            second = swarm_engine(cfg, target).rollout(MODEL, 2)
            time.sleep(1.0)
        finally:
            for load in loads:
                load.__exit__(None, None, None)
        assert second.ok and [r["version"] for r in second.replicas] == [2, 2], second
        for address, load in zip(cluster.addresses, loads, strict=True):
            assert load.errors == {}, (address, load.errors, load.first_error)
            assert load.versions[1] > 0 and load.versions[2] > 0
        assert [served_version(a, port, x) for a in cluster.addresses] == [2, 2]
        both = ",".join(f"{a}:{port}" for a in cluster.addresses)  # the client balances across the nodes
        report = verify_served(Endpoint(both), ServedModel(MODEL, label="stable"), load_golden(versions.golden[2]),
                               Tolerance(atol=1e-5))
        assert report["ok"] and report["served_versions"] == [2], report["reason"]
        assert set(report["endpoints"]) == {f"{a}:{port}" for a in cluster.addresses}
        print(f"\nswarm two engines: first deploy {first.duration_s:.1f} s; v1->v2 across both nodes "
              f"{second.duration_s:.1f} s; load " + ", ".join(f"{a}: {ld.requests} requests 0 failed"
                                                          for a, ld in zip(cluster.addresses, loads, strict=True)))
    finally:
        target.purge()
