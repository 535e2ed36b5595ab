"""rollout.swarm_fetch = "sidecar" against a real dockerd in swarm mode: the official-image path.

The official tensorflow/serving image cannot be pulled here; our image is a drop-in (same flags,
entrypoint path, REST API), so it runs in the mode the official image needs: the serving
containers run bash and the image's entrypoint only (no agent, no python of ours), and a global
fetch service (our image, agent `fetch` mode) fills the per-model volume they mount read-only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import DeployConfig
from pipeline.rollout.swarm_engine import SwarmRolloutFailed
from pipeline.rollout.swarm_run import golden_check, rollout_swarm, swarm_engine
from pipeline.targets.swarm import SwarmTarget, spec
from tests.rollout.models import MODEL
from tests.support.golden_inputs import inputs
from tests.support.procs import free_port, wait_for
from tests.swarm.conftest import TAMPERED, swarm_config
from tests.swarm.load import FleetLoad
from tests.swarm.replicas import healthy_versions

pytestmark = pytest.mark.e2e


@pytest.fixture
def sidecar_cfg(tmp_path: Path, swarm, serving_image: str, bad_versions) -> Iterator[DeployConfig]:
    cfg = swarm_config(tmp_path, serving_image, bad_versions[1], replicas=2, swarm_fetch="sidecar")
    yield cfg
    SwarmTarget(cfg.rollout, swarm).purge()


def fetch_service(target: SwarmTarget):
    return target.service_named(spec.settings_service(target.fetch_settings(MODEL)))


def fetch_version(target: SwarmTarget) -> int:
    return int(fetch_service(target).attrs["Spec"]["Labels"][spec.VERSION_LABEL])


def volume_listing(client, image: str, volume: str) -> list[str]:
    """What the model volume holds (a throwaway container without network, volume read-only)."""
    out = client.containers.run(image, entrypoint=["ls", "-A", f"/m/{MODEL}"], network_mode="none", remove=True,
                                volumes={volume: {"bind": "/m", "mode": "ro"}})
    return sorted(out.decode().split())


def assert_no_agent_in_serving_containers(target: SwarmTarget, client, volume: str) -> None:
    """Sidecar serving replicas: bash + the image's entrypoint, no agent/python of ours, volume read-only."""
    for r in target.replicas(MODEL):
        attrs = client.containers.get(r["container"]).attrs
        entry = attrs["Config"]["Entrypoint"] or []
        assert entry[:2] == ["bash", "-c"] and f"exec {spec.ENTRYPOINT} " in entry[2], entry
        health = attrs["Config"]["Healthcheck"]["Test"]
        assert health[:3] == ["CMD", "bash", "-c"], health
        flat = " ".join([*entry, *(attrs["Config"]["Cmd"] or []), *health])
        assert "python" not in flat and spec.AGENT_PATH not in flat, flat
        mounts = [m for m in attrs["Mounts"] if m.get("Name") == volume]
        assert len(mounts) == 1 and mounts[0]["RW"] is False and mounts[0]["Destination"] == "/models", attrs["Mounts"]
        assert not any(m["Destination"].startswith("/tfr/agent") for m in attrs["Mounts"])


def test_sidecar_deploy_update_under_load_tampered_refused_and_purge(sidecar_cfg, bad_versions, swarm,
                                                                     serving_image):
    versions, _ = bad_versions
    cfg = sidecar_cfg
    target = SwarmTarget(cfg.rollout, swarm)
    assert target.fetch_mode == "sidecar"
    endpoint = f"127.0.0.1:{cfg.rollout.grpc_port}"
    volume = spec.volume_name(cfg.rollout.service_name, MODEL)
    x = inputs(versions)

    first = swarm_engine(cfg, target).rollout(MODEL, 1)
    assert first.ok and first.action == "first-deploy", first
    assert first.fetch.ok and first.fetch.action == "create" and first.fetch.versions == [1], first.fetch
    assert [r["version"] for r in first.replicas] == [1, 1]
    assert healthy_versions(target, swarm) == [1, 1]
    assert fetch_version(target) == 1
    ok, reason = golden_check(cfg, MODEL, versions.golden[1])(endpoint, 1)
    assert ok, reason
    assert_no_agent_in_serving_containers(target, swarm, volume)
    assert volume_listing(swarm, serving_image, volume) == ["1"]
    print(f"\nsidecar first deploy: fetch service on v1 in {first.fetch.duration_s:.1f} s, 2 replicas "
          f"healthy on v1 in {first.duration_s:.1f} s, golden set verified")

    with FleetLoad(endpoint, MODEL, "stable", x, clients=16) as load:
        time.sleep(1.0)
        second = rollout_swarm(cfg, MODEL, 2, verify=True, canary_port=free_port())
        time.sleep(1.0)
    assert second.ok and second.action == "update" and second.previous == 1, second
    assert second.fetch.ok and second.fetch.versions == [2, 1], second.fetch
    assert second.canary.ok, second.canary
    assert load.versions[1] > 0 and load.versions[2] > 0, load.versions
    failed = sum(load.errors.values())
    # no drain in sidecar mode (documented): some failures are expected, a collapse is not
    assert failed <= max(50, load.requests // 20), (load.errors, load.first_error)
    assert healthy_versions(target, swarm) == [2, 2]
    assert fetch_version(target) == 2
    ok, reason = golden_check(cfg, MODEL, versions.golden[2])(endpoint, 2)
    assert ok, reason
    assert_no_agent_in_serving_containers(target, swarm, volume)
    assert volume_listing(swarm, serving_image, volume) == ["1", "2"]
    print(f"sidecar update v1->v2: {second.duration_s:.1f} s (fetch {second.fetch.duration_s:.1f} s, canary "
          f"{second.canary.duration_s:.1f} s), {load.requests} requests from 16 clients, {failed} failed "
          f"{dict(load.errors)} (first: {load.first_error}), by version {dict(load.versions)}")

    # a version whose bytes do not match the manifest: the fetch refuses it, the serving service is untouched
    spec_before = target.service_object(MODEL).attrs["Spec"]
    with FleetLoad(endpoint, MODEL, "stable", x, clients=16) as load:
        with pytest.raises(SwarmRolloutFailed, match="fetch failed") as err:
            swarm_engine(cfg, target).rollout(MODEL, TAMPERED, check=golden_check(cfg, MODEL, versions.golden[2]),
                           canary_port=free_port())
    report = err.value.report
    assert not report.fetch.ok and report.canary is None and not report.rolled_back, report
    assert target.served_version(MODEL) == 2 and target.service_object(MODEL).attrs["Spec"] == spec_before
    assert all(spec.task_version(t) != TAMPERED for t in target.tasks(MODEL))
    assert load.errors == {} and set(load.versions) == {2}, (load.errors, load.first_error)
    assert wait_for(lambda: fetch_version(target) == 2, 60, 0.5)  # swarm rolled the fetch service back
    assert "refusing to fetch" in target.logs(400)
    assert str(TAMPERED) not in volume_listing(swarm, serving_image, volume)
    assert healthy_versions(target, swarm) == [2, 2]
    print(f"sidecar tampered v{TAMPERED}: refused by the fetch service in {report.fetch.duration_s:.1f} s "
          f"(rollout {report.duration_s:.1f} s); serving spec untouched; stable load {load.requests} requests, "
          "0 failed")

    status = target.describe()
    assert status["services"][f"{second.service}-fetch"]["role"] == "fetch"
    assert [r["version"] for r in status["services"][second.service]["replicas"]] == [2, 2]

    removed = target.purge()
    assert f"volume {volume}" in removed, removed
    assert f"service {second.service}-fetch" in removed, removed
    selector = {"label": f"{spec.SERVICE_LABEL}={cfg.rollout.service_name}"}
    assert not swarm.services.list(filters=selector)
    assert not swarm.configs.list(filters=selector) and not swarm.secrets.list(filters=selector)
    assert not [v for v in swarm.volumes.list() if v.name == volume]
    assert not target.running()
