"""`tfrollout deploy` from an empty engine: S3 store (moto process) + Docker target (offline image)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.storage.conftest import MotoServer
from tests.support.deploy_cli import REPO_CONFIG, json_cli, quick_deploy_env
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e


def test_cli_deploy_with_s3_and_docker_first_deploy_then_canary_promote(
        tmp_path: Path, demo_source_model: Path, serving_image: str, docker_client, moto: MotoServer,
        aws_env: dict[str, str]):
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    name, volume = f"tfr-cli-{tag}", f"tfr-cli-{tag}"
    assert not docker_client.containers.list(all=True, filters={"name": name})  # empty engine for us
    env = quick_deploy_env(demo_source_model, aws_env, moto.endpoint, f"cli-{tag}",
                           TFROLLOUT_ROLLOUT__TARGET="docker", TFROLLOUT_ROLLOUT__IMAGE=serving_image,
                           TFROLLOUT_ROLLOUT__PULL_IMAGE="false", TFROLLOUT_ROLLOUT__GRPC_PORT=str(port),
                           TFROLLOUT_ROLLOUT__REST_PORT=str(free_port()), TFROLLOUT_ROLLOUT__CONTAINER_NAME=name,
                           TFROLLOUT_ROLLOUT__VOLUME=volume, TFROLLOUT_VERIFY__ENDPOINT=f"127.0.0.1:{port}")
    cli = json_cli(tmp_path, env)

    try:
        first = cli("deploy", "--config", str(REPO_CONFIG))
        assert first["ran"] == ["load", "transfer", "gate", "export", "push", "rollout", "verify"]
        assert first["stages"]["push"]["outputs"]["uri"] == f"s3://cli-{tag}/models/digits/1/"
        rollout = first["stages"]["rollout"]["outputs"]
        assert rollout["target"] == "docker" and rollout["action"] == "first-deploy"
        assert rollout["served"]["labels"] == {"stable": 1}
        assert first["stages"]["verify"]["outputs"]["max_abs_diff"] <= 1e-5

        second = cli("deploy", "--config", str(REPO_CONFIG))
        rollout = second["stages"]["rollout"]["outputs"]
        assert (rollout["action"], rollout["previous"], rollout["version"]) == ("update", 1, 2)
        assert rollout["served"] == {"model": "digits", "versions": [2], "labels": {"stable": 2}}
        assert second["stages"]["verify"]["outputs"]["served_versions"] == [2]
        container = docker_client.containers.get(name)
        assert container.status == "running"
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    finally:
        from pipeline.config import RolloutConfig
        from pipeline.targets.docker import DockerTarget

        DockerTarget(RolloutConfig(target="docker", container_name=name, volume=volume,
                                   image=serving_image)).destroy(volume=True)
