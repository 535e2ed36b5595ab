"""`DOCKER_HOST=ssh://…` as a docker user sets it up: a real sshd on 127.0.0.1 in front of the test
engine, the user's ~/.ssh/config (alias, port, IdentityFile) and known_hosts. The CLI as CI runs
it: first deploy, update (canary → promote) under a gRPC load, rollback, status, purge; every
deploy logs in a bounded number of times, and an unknown host key is refused in one line."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from pipeline.verify.golden import load_golden
from tests.rollout.hammer import BackgroundLoad
from tests.storage.conftest import MotoServer
from tests.support.deploy_cli import REPO_CONFIG, TFROLLOUT, json_cli, quick_deploy_env
from tests.support.procs import free_port
from tests.support.sshd import SSHDaemon

pytestmark = pytest.mark.e2e
MAX_LOGINS_PER_COMMAND = 5


def test_ssh_engine_deploy_update_under_load_rollback_status_purge(
        tmp_path: Path, demo_source_model: Path, serving_image: str, docker_client, moto: MotoServer,
        aws_env: dict[str, str]):
    tag = uuid.uuid4().hex[:8]
    port, name = free_port(), f"tfr-ssh-{tag}"
    with SSHDaemon(tmp_path / "sshd") as sshd:
        home = sshd.client_home(tmp_path / "home", "tfr-engine")
        env = quick_deploy_env(demo_source_model, aws_env, moto.endpoint, f"ssh-{tag}", HOME=str(home),
                               DOCKER_HOST="ssh://tfr-engine",  # the port comes from ~/.ssh/config
                               TFROLLOUT_ROLLOUT__TARGET="docker", TFROLLOUT_ROLLOUT__IMAGE=serving_image,
                               TFROLLOUT_ROLLOUT__PULL_IMAGE="false", TFROLLOUT_ROLLOUT__GRPC_PORT=str(port),
                               TFROLLOUT_ROLLOUT__REST_PORT=str(free_port()),
                               TFROLLOUT_ROLLOUT__CONTAINER_NAME=name, TFROLLOUT_ROLLOUT__VOLUME=name,
                               TFROLLOUT_VERIFY__ENDPOINT=f"127.0.0.1:{port}")
        cli = json_cli(tmp_path, env)
        logins: dict[str, int] = {}

        def counted(label: str, *args: str) -> dict:
            before = sshd.logins()
            report = cli(*args)
            logins[label] = sshd.logins() - before
            return report

        try:
            first = counted("first deploy", "deploy", "--config", str(REPO_CONFIG))
            rollout = first["stages"]["rollout"]["outputs"]
            assert (rollout["target"], rollout["action"], rollout["served"]["labels"]) == (
                "docker", "first-deploy", {"stable": 1})
            assert first["stages"]["verify"]["outputs"]["max_abs_diff"] <= 1e-5

            golden = load_golden(Path(first["stages"]["export"]["outputs"]["golden"]))
            x = {k: v[:1] for k, v in golden.inputs.items()}
            with BackgroundLoad(f"127.0.0.1:{port}", "digits", "stable", x, concurrency=4) as load:
                second = counted("update", "deploy", "--config", str(REPO_CONFIG))
                back = counted("rollback", "rollback")
            print(f"ssh logins per command: {logins}; load {load.ok} ok, errors {dict(load.errors)}")
            rollout = second["stages"]["rollout"]["outputs"]
            assert (rollout["action"], rollout["previous"], rollout["version"]) == ("update", 1, 2)
            assert rollout["served"]["labels"] == {"stable": 2}
            assert back["ok"] and back["served"]["labels"] == {"stable": 1}, back
            assert load.ok > 50 and not load.errors, (load.errors, load.first_error)
            assert {1, 2} <= set(load.versions)  # the load saw the update and the rollback

            status = counted("status", "status")
            assert status["health"] == "healthy" and status["engine"] == "ssh://tfr-engine"
            assert status["config"]["labels"] == {"stable": 1}
            assert all(n <= MAX_LOGINS_PER_COMMAND for n in logins.values()), logins
            assert logins["first deploy"] >= 1  # the count is real: the deploys went through sshd

            # a host whose key the user has not accepted is refused in one line, never trusted on first use
            strangers = sshd.client_home(tmp_path / "stranger", "tfr-engine", known=False)
            proc = subprocess.run([TFROLLOUT, "status"], cwd=tmp_path, env={**env, "HOME": str(strangers)},
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 12, proc.stderr
            error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert len(error) == 1 and "not found in known_hosts" in error[0] and "ssh-keyscan" in error[0]

            purged = counted("purge", "serve", "purge", "--yes")
            assert purged["ok"] and purged["removed"]
            assert not docker_client.containers.list(all=True, filters={"name": name})
            assert not docker_client.volumes.list(filters={"name": name})
        finally:
            from pipeline.config import RolloutConfig
            from pipeline.targets.docker import DockerTarget

            DockerTarget(RolloutConfig(target="docker", container_name=name, volume=name,
                                       image=serving_image)).destroy(volume=True)
