"""rollout.target = swarm against a real dockerd in swarm mode, the offline image and a moto S3 process.

One node, several replicas on one gRPC port (SO_REUSEPORT, host networking, 127.0.0.1)."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.errors import RolloutError
from pipeline.rollout.swarm_engine import SwarmRolloutFailed
from pipeline.rollout.swarm_run import rollout_swarm, swarm_engine
from pipeline.targets.swarm import SwarmTarget, spec
from tests.rollout.models import MODEL
from tests.support.golden_inputs import inputs
from tests.support.procs import free_port, wait_for
from tests.swarm.conftest import TAMPERED, UNLOADABLE
from tests.swarm.load import FleetLoad
from tests.swarm.replicas import healthy_versions

pytestmark = pytest.mark.e2e


def listeners(port: int) -> int:
    """LISTEN sockets on 127.0.0.1:port in the host's network namespace (gRPC binds an IPv4 address
    as a v4-mapped IPv6 socket where it can, so both tables count)."""
    wanted = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            count += sum(1 for line in f.readlines()[1:]
                         if line.split()[1] in wanted and line.split()[3] == "0A")
    return count


class VersionWatch:
    """Samples the tasks while a rollout runs: the most replicas of `version` alive at once."""

    def __init__(self, target: SwarmTarget, version: int) -> None:
        self.target, self.version, self.peak = target, version, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                tasks = self.target.tasks(MODEL)
            except Exception:  # noqa: BLE001 - sampling only
                continue
            alive = [t for t in tasks if spec.task_version(t) == self.version
                     and t["Status"]["State"] in ("starting", "running")]
            self.peak = max(self.peak, len(alive))
            time.sleep(0.2)

    def __enter__(self) -> VersionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_swarm_deploy_update_under_load_bad_versions_rolled_back_killed_replica_and_stop(
        swarm_cfg, bad_versions, swarm):
    versions, _ = bad_versions
    cfg = swarm_cfg
    target = SwarmTarget(cfg.rollout, swarm)
    endpoint = f"127.0.0.1:{cfg.rollout.grpc_port}"
    x = inputs(versions)

    first = swarm_engine(cfg, target).rollout(MODEL, 1)
    assert first.ok and first.action == "first-deploy", first
    assert [r["version"] for r in first.replicas] == [1, 1, 1]
    assert healthy_versions(target, swarm) == [1, 1, 1]
    assert listeners(cfg.rollout.grpc_port) == 3  # three servers share the port
    replica = swarm.containers.get(first.replicas[0]["container"]).attrs
    assert replica["HostConfig"]["NetworkMode"] == "host" and not replica["HostConfig"].get("PortBindings")
    print(f"\nswarm first deploy: 3 replicas healthy on v1 in {first.duration_s:.1f} s")

    with FleetLoad(endpoint, MODEL, "stable", x, clients=16) as load:
        time.sleep(1.0)
        second = rollout_swarm(cfg, MODEL, 2, verify=True, canary_port=free_port())  # `tfrollout rollout`
        time.sleep(1.0)
    assert second.ok and second.action == "update" and second.previous == 1
    assert second.canary.ok, second.canary
    assert load.errors == {}, (load.errors, load.first_error)
    assert load.versions[1] > 0 and load.versions[2] > 0
    assert healthy_versions(target, swarm) == [2, 2, 2]
    from pipeline.commands.runtime import status_report

    status = status_report(cfg, MODEL)  # `tfrollout status`: per replica from the tasks
    assert status["ok"] and status["target"] == "swarm" and status["config"]["labels"] == {"stable": 2}
    rows = status["services"][second.service]["replicas"]
    assert [(r["version"], r["state"]) for r in rows] == [(2, "running")] * 3 and status["on_host"] == [2]
    print(f"swarm update v1->v2: {second.duration_s:.1f} s, {load.requests} requests from 16 clients, "
          f"{sum(load.errors.values())} failed, by version {dict(load.versions)}")

    with FleetLoad(endpoint, MODEL, "stable", x, clients=16) as load, VersionWatch(target, 3) as watch:
        with pytest.raises(SwarmRolloutFailed, match="canary failed") as err:
            rollout_swarm(cfg, MODEL, 3, verify=True, canary_port=free_port())  # golden set pulled from the store
    report = err.value.report
    assert not report.canary.ok and "differ" in report.canary.reason, report.canary
    assert target.served_version(MODEL) == 2 and watch.peak == 0 and not report.rolled_back
    assert load.errors == {} and set(load.versions) == {2}, (load.errors, load.first_error)
    assert not swarm.services.list(filters={"name": f"{report.service}-canary"})
    print(f"swarm wrong-output v3: stopped at its canary replica in {report.canary.duration_s:.1f} s "
          f"({report.canary.reason[:80]}); 0 main replicas on v3; stable load {load.requests} requests, 0 failed")

    # a version that fails to load, through `tfrollout rollout` (canary on): stopped at its canary
    with FleetLoad(endpoint, MODEL, "stable", x, clients=16) as load, VersionWatch(target, UNLOADABLE) as watch:
        with pytest.raises(SwarmRolloutFailed, match="canary failed: canary replica not healthy") as err:
            rollout_swarm(cfg, MODEL, UNLOADABLE, verify=True, canary_port=free_port())
    report = err.value.report
    assert target.served_version(MODEL) == 2 and watch.peak == 0
    assert load.errors == {} and set(load.versions) == {2}, (load.errors, load.first_error)
    print(f"swarm unloadable v{UNLOADABLE}: stopped at its canary in {report.canary.duration_s:.1f} s; 0 main "
          f"replicas on it; stable load {load.requests} requests, 0 failed")

    # swarm's own rollback (no canary): a version whose bytes do not match the manifest never starts
    with FleetLoad(endpoint, MODEL, "stable", x, clients=16) as load, VersionWatch(target, TAMPERED) as watch:
        with pytest.raises(SwarmRolloutFailed) as err:
            swarm_engine(cfg, target).rollout(MODEL, TAMPERED)
    report = err.value.report
    assert report.rolled_back and target.served_version(MODEL) == 2, report
    assert watch.peak <= 1, f"{watch.peak} replicas of v{TAMPERED} alive at once"
    assert load.errors == {}, (load.errors, load.first_error)
    assert set(load.versions) == {2}
    assert wait_for(lambda: healthy_versions(target, swarm) == [2, 2, 2], 60, 0.5)
    print(f"swarm tampered v{TAMPERED}: swarm rolled back to v2 in {report.duration_s:.1f} s; at most {watch.peak} "
          f"replica of v{TAMPERED} alive; stable load {load.requests} requests, 0 failed")
    assert "refusing to serve" in target.logs(400)

    before = [r["container"] for r in target.replicas(MODEL)]
    victim = before[0]
    swarm.containers.get(victim).kill()
    assert wait_for(lambda: healthy_versions(target, swarm) == [2, 2, 2] and
                    victim not in [r["container"] for r in target.replicas(MODEL)], 120, 0.5)
    from pipeline.rollout.swarm_run import golden_check

    replaced = [r["container"] for r in target.replicas(MODEL) if r["container"] not in before]
    assert len(replaced) == 1
    ok, reason = golden_check(cfg, MODEL, versions.golden[2])(endpoint, 2)  # the fleet still answers like v2
    assert ok, reason
    print("swarm killed replica: replaced by a healthy v2 replica, golden set verified")

    target.lock("test", 60)
    with pytest.raises(RolloutError, match="another rollout is in progress"):
        swarm_engine(cfg, SwarmTarget(cfg.rollout, swarm)).rollout(MODEL, 1)
    assert target.served_version(MODEL) == 2
    target.unlock()

    # promotion is the commit point: clean-up after it that keeps failing is owed, never a rollback
    broken = SwarmTarget(cfg.rollout, swarm)
    real_unlock = broken.unlock

    def engine_gone(*_: object) -> None:
        raise ConnectionError("Connection aborted.")

    broken.drop_unused = engine_gone  # type: ignore[method-assign]
    broken.unlock = engine_gone  # type: ignore[method-assign]
    owed = swarm_engine(cfg, broken).rollout(MODEL, 1)  # v1 again; swarm's health gating only
    assert owed.ok and broken.served_version(MODEL) == 1 and healthy_versions(target, swarm) == [1, 1, 1]
    assert "configs/secrets failed after 3 attempts" in owed.cleanup_pending
    assert "rollout lock not released" in owed.cleanup_pending
    left = [o.name for o in target._unused(target.settings(MODEL))]
    assert left, "the failed clean-up left the objects no spec uses"
    assert "another rollout is in progress" in target.finish_clean_up(MODEL)  # the lock is still held
    real_unlock()  # what the next command does once this (the holder's) process has exited
    assert target.finish_clean_up(MODEL).startswith("finished clean-up")  # `tfrollout status` finishes it
    assert not target._unused(target.settings(MODEL)) and target.finish_clean_up(MODEL) is None
    assert target.holder() is None and target.served_version(MODEL) == 1
    print(f"swarm clean-up failing after promote: v1 stays served; owed {len(left)} object(s), removed by status")

    removed = target.purge()
    assert any(r.startswith("service ") for r in removed) and any(r.startswith("secret ") for r in removed)
    selector = {"label": f"{spec.SERVICE_LABEL}={cfg.rollout.service_name}"}
    assert not swarm.services.list(filters=selector)
    assert not swarm.configs.list(filters=selector) and not swarm.secrets.list(filters=selector)
    assert not target.running()
