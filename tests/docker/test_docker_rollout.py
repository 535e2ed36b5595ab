"""Rollout against real dockerd + the offline image + a moto S3 process (host networking, 127.0.0.1)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.errors import StorageError
from pipeline.rollout.machine import RolloutFailed
from pipeline.rollout.plan import Served
from pipeline.rollout.session import committed_versions, open_session
from serving.client.errors import RequestFailedError
from tests.rollout.hammer import BackgroundLoad
from tests.rollout.models import MODEL
from tests.support.golden_inputs import inputs

pytestmark = pytest.mark.e2e


def _session(cfg, versions, golden_version):
    store, _ = committed_versions(cfg, MODEL)
    return open_session(cfg, MODEL, store=store, golden=versions.golden[golden_version])


def _rollout(cfg, versions, version, golden=None):
    session = _session(cfg, versions, golden or version)
    try:
        return session.machine.rollout(MODEL, version)
    finally:
        session.close()


def test_docker_first_deploy_update_under_load_bad_model_and_killed_container(docker_cfg, s3_versions, docker_client):
    versions, _ = s3_versions
    first = _rollout(docker_cfg, versions, 1)
    assert first.ok and first.action == "first-deploy" and first.served["labels"] == {"stable": 1}
    container = docker_client.containers.get(docker_cfg.rollout.container_name)
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    endpoint = f"127.0.0.1:{docker_cfg.rollout.grpc_port}"

    # the update under load; and promotion is the commit point: every write to the volume after it
    # fails (the engine gone), yet stable stays on the verified v2 and `status` finishes the clean-up
    from pipeline.commands.runtime import finish_owed_clean_up
    from tests.rollout.faults import writes_fail_after_promote

    session = _session(docker_cfg, versions, 2)
    failed = writes_fail_after_promote(session)
    with BackgroundLoad(endpoint, MODEL, "stable", inputs(versions), concurrency=20) as load:
        threading.Event().wait(0.5)
        try:
            second = session.machine.rollout(MODEL, 2)
        finally:
            session.close()
        threading.Event().wait(0.5)
    assert second.ok and second.action == "update" and second.promoted and len(failed) == 3
    assert second.cleanup_pending.startswith("persist-config failed after 3 attempts")
    assert load.errors == {}, (load.errors, load.first_error)
    assert load.versions[1] > 0 and load.versions[2] > 0
    print(f"\ndocker zero-downtime: {load.requests} requests, 0 failed, by version {dict(load.versions)}, "
          f"timings {second.timings_s}; clean-up owed: {second.cleanup_pending[:60]}")
    assert session.host.read(MODEL).labels["stable"] == 1  # the volume's config lags behind the runtime
    assert finish_owed_clean_up(docker_cfg, MODEL).startswith("finished")
    assert _session(docker_cfg, versions, 2).host.read(MODEL) == Served(MODEL, (2,), {"stable": 2})

    with BackgroundLoad(endpoint, MODEL, "stable", inputs(versions), concurrency=20) as load:
        threading.Event().wait(0.3)
        with pytest.raises(RolloutFailed) as err:
            _rollout(docker_cfg, versions, 3)
    report = err.value.report
    assert report.rolled_back and "differs" in report.verify["reason"]
    assert "Successfully loaded servable version" in report.logs  # the container's own log
    assert load.errors == {} and set(load.versions) == {2}
    print(f"docker bad model: stable load {load.requests} requests, 0 failed; {report.verify['reason']}")

    # the container is killed while the canary is verified
    session = _session(docker_cfg, versions, 1)
    real = session.machine.verifier

    def kill_then_verify(version, label, timeout_s):
        docker_client.containers.get(docker_cfg.rollout.container_name).kill()
        return real(version, label, timeout_s)

    session.machine.verifier = kill_then_verify
    with pytest.raises(RolloutFailed, match="not running.*tfrollout rollback"):
        session.machine.rollout(MODEL, 1)
    assert session.host.read(MODEL) == Served(MODEL, (2,), {"stable": 2})
    assert not session.target.running()
    restored = session.machine.rollback(MODEL, [1, 2])
    session.close()
    assert restored.action == "restore"
    from serving.client import PredictionClient

    with PredictionClient(endpoint, deadline=15) as client:
        assert client.predict_detailed(MODEL, inputs(versions), label="stable").version == 2
        with pytest.raises(RequestFailedError, match="UNAUTHENTICATED"):  # no token: ModelService closed
            client.status(MODEL)
    target = session.target
    assert target.describe()["admin_api"] == "token" and target.admin_token()
    container = docker_client.containers.get(docker_cfg.rollout.container_name)
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert any(arg.startswith("--admin_token_file=") for arg in container.attrs["Args"])
    removed = target.purge()  # `serve purge`: nothing of ours is left on the engine
    assert removed == [f"container {docker_cfg.rollout.container_name}", f"volume {docker_cfg.rollout.volume}"]
    assert not docker_client.containers.list(all=True, filters={"name": docker_cfg.rollout.container_name})
    assert not docker_client.volumes.list(filters={"name": docker_cfg.rollout.volume})


def test_s3_unreachable_fails_before_touching_the_engine(tmp_path: Path, serving_image, docker_client, moto):
    from tests.docker.conftest import docker_config

    storage = {"uri": "s3://tfr-rollout/models", "endpoint_url": "http://127.0.0.1:9", "max_attempts": 1,
               "connect_timeout_s": 0.5}
    cfg = docker_config(tmp_path, serving_image, storage)
    before = {c.name for c in docker_client.containers.list(all=True)}
    with pytest.raises(StorageError, match="127.0.0.1:9|unreachable|connect"):
        from tests.docker.stage_ctx import run_rollout_stage

        run_rollout_stage(cfg, version=1)
    after = {c.name for c in docker_client.containers.list(all=True)}
    assert after == before and cfg.rollout.container_name not in after
    volumes = {v.name for v in docker_client.volumes.list()}
    assert cfg.rollout.volume not in volumes
