"""`tfrollout deploy --set rollout.target=swarm --set rollout.replicas=3` from an empty engine:
the whole pipeline (demo transfer, export, push to a moto S3 process) ending in a swarm service;
a second deploy rolls v2 across the replicas under 16 clients; `rollback`, `status`, `serve stop`."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.targets.swarm import spec
from pipeline.verify.golden import load_golden
from tests.storage.conftest import MotoServer
from tests.support.deploy_cli import REPO_CONFIG, json_cli, quick_deploy_env
from tests.support.procs import free_port
from tests.swarm.load import FleetLoad

pytestmark = pytest.mark.e2e


def test_cli_deploy_to_a_three_replica_swarm_service_update_under_load_rollback_and_stop(
        tmp_path: Path, demo_source_model: Path, serving_image: str, swarm, moto: MotoServer,
        aws_env: dict[str, str]):
    tag = uuid.uuid4().hex[:8]
    port, service_prefix = free_port(), f"tfr-cli-{tag}"
    selector = {"label": f"{spec.SERVICE_LABEL}={service_prefix}"}
    assert not swarm.services.list(filters=selector)  # an empty engine for this service
    env = quick_deploy_env(demo_source_model, aws_env, moto.endpoint, f"swarm-cli-{tag}",
                           TFROLLOUT_ROLLOUT__IMAGE=serving_image, TFROLLOUT_ROLLOUT__PULL_IMAGE="false",
                           TFROLLOUT_ROLLOUT__GRPC_PORT=str(port), TFROLLOUT_ROLLOUT__CANARY_PORT=str(free_port()),
                           TFROLLOUT_ROLLOUT__SERVICE_NAME=service_prefix, TFROLLOUT_ROLLOUT__SWARM_MONITOR_S="3",
                           TFROLLOUT_ROLLOUT__SWARM_HEALTH_INTERVAL_S="1",
                           TFROLLOUT_VERIFY__ENDPOINT=f"127.0.0.1:{port}")
    cli = json_cli(tmp_path, env, "--set", "rollout.target=swarm", "--set", "rollout.replicas=3")

    def replica_versions() -> list[tuple[int, str]]:
        status = cli("status")
        assert status["target"] == "swarm"
        rows = status["services"][f"{service_prefix}-digits"]["replicas"]
        return sorted((r["version"], r["state"]) for r in rows)

    try:
        first = cli("deploy", "--config", str(REPO_CONFIG))
        assert first["ran"] == ["load", "transfer", "gate", "export", "push", "rollout", "verify"]
        rollout = first["stages"]["rollout"]["outputs"]
        assert (rollout["target"], rollout["action"], rollout["version"]) == ("swarm", "first-deploy", 1)
        assert rollout["served"]["versions"] == [1] and rollout["served"]["replicas"] == 3
        assert first["stages"]["verify"]["outputs"]["served_versions"] == [1]
        assert replica_versions() == [(1, "running")] * 3

        golden = load_golden(Path(first["stages"]["export"]["outputs"]["golden"]))
        x = {k: v[:1] for k, v in golden.inputs.items()}
        with FleetLoad(f"127.0.0.1:{port}", "digits", "stable", x, clients=16) as load:
            second = cli("deploy", "--config", str(REPO_CONFIG))
        gate = second["stages"]["gate"]["outputs"]  # deploy.toml's max_drop_vs_serving scored the service's stable
        assert gate["serving_version"] == 1 and gate["serving_note"] is None and gate["passed"]
        rollout = second["stages"]["rollout"]["outputs"]
        assert (rollout["action"], rollout["previous"], rollout["version"]) == ("update", 1, 2)
        assert rollout["timings_s"]["canary"] > 0  # the one-replica canary service was checked first
        assert second["stages"]["verify"]["outputs"]["served_versions"] == [2]
        assert load.errors == {}, (load.errors, load.first_error)
        assert load.versions[1] > 0 and load.versions[2] > 0
        assert replica_versions() == [(2, "running")] * 3
        print(f"\nswarm deploy v1->v2 under 16 clients: {load.requests} requests, 0 failed, "
              f"by version {dict(load.versions)}; rollout {rollout['timings_s']}")

        with FleetLoad(f"127.0.0.1:{port}", "digits", "stable", x, clients=16) as load:
            back = cli("rollback")
        assert (back["action"], back["previous"], back["version"], back["ok"]) == ("rollback", 2, 1, True)
        assert load.errors == {}, (load.errors, load.first_error)
        assert replica_versions() == [(1, "running")] * 3

        stopped = cli("serve", "stop")
        assert stopped["was_running"] and not stopped["running"]
        assert not swarm.services.list(filters=selector)
        assert not swarm.configs.list(filters=selector) and not swarm.secrets.list(filters=selector)
    finally:
        from pipeline.config import RolloutConfig
        from pipeline.targets.swarm import SwarmTarget

        SwarmTarget(RolloutConfig(target="swarm", service_name=service_prefix), swarm).purge()
