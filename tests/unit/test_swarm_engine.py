"""The swarm engine's decisions against a fake edge: every path from first deploy to rollback, no Docker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.config import RolloutConfig
from pipeline.errors import RolloutError
from pipeline.rollout.swarm_engine import SwarmEngine, SwarmRolloutFailed
from pipeline.targets.swarm.spec import Applied, Convergence

M = "digits"
SERVICE = f"tfrollout-{M}"
CANARY = f"{SERVICE}-canary"
FETCH = f"{SERVICE}-fetch"


@dataclass
class FakeSwarm:
    """A swarm in memory: which version each service's spec pins, what `wait` will report."""

    fetch_mode: str = "agent"
    endpoint: str = "127.0.0.1:8500"
    served: int | None = None  # the main service's pinned version (None: no service)
    canary_healthy: bool = True
    converges: bool = True  # the main service's update/create converges on the new version
    fetch_ok: bool = True
    fetch_exists: bool = False
    canary_left: bool = False  # a crashed rollout's canary service
    unused_fails: int = 0  # drop_unused raises this many times
    calls: list[str] = field(default_factory=list)
    locked: bool = False

    # -- lock
    def require_manager(self) -> None:
        self.calls.append("manager")

    def lock(self, owner: str, stale_after_s: float) -> None:
        if self.locked:
            raise RolloutError("another rollout is in progress")
        self.locked = True
        self.calls.append("lock")

    def unlock(self) -> None:
        self.locked = False
        self.calls.append("unlock")

    # -- reads
    def manifest(self, model: str, version: int) -> bytes:
        return f"manifest-{version}".encode()

    def service(self, model: str) -> str:
        return SERVICE

    def canary_name(self, model: str) -> str:
        return CANARY

    def fetch_name(self, model: str) -> str:
        return FETCH

    def has_service(self, model: str) -> bool:
        return self.served is not None

    def has_service_named(self, name: str) -> bool:
        return name == CANARY and self.canary_left

    def served_version(self, model: str) -> int | None:
        return self.served

    def replicas(self, model: str) -> list[dict[str, Any]]:
        return [] if self.served is None else [{"slot": 1, "version": self.served}]

    # -- writes
    def apply_fetch(self, model: str, version: int, versions: list[tuple[int, bytes]]) -> Applied:
        self.calls.append(f"fetch {[v for v, _ in versions]}")
        action = "update" if self.fetch_exists else "create"
        self.fetch_exists = True
        return Applied(action, FETCH, 2)

    def apply_service(self, model: str, version: int, manifest: bytes) -> Applied:
        action = "first-deploy" if self.served is None else "update"
        self.calls.append(f"{action} v{version}")
        self._pending = (self.served, version)
        self.served = version
        return Applied(action, SERVICE, 3)

    def start_canary(self, model: str, version: int, manifest: bytes, port: int) -> Applied:
        self.calls.append(f"canary v{version} :{port}")
        return Applied("create", CANARY, 1)

    def wait(self, name: str, replicas: int, timeout_s: float, *, fail_fast: bool = False) -> Convergence:
        self.calls.append(f"wait {name}")
        if name == CANARY:
            version = self._canary_version()
            return Convergence(True, self.canary_healthy, version if self.canary_healthy else None, {},
                               "ok" if self.canary_healthy else "task failed: exit 1")
        if name == FETCH:
            return Convergence(True, self.fetch_ok, self._wanted() if self.fetch_ok else None, {},
                               "ok" if self.fetch_ok else "task failed: sha256 mismatch")
        before, wanted = self._pending
        if self.converges:
            return Convergence(True, True, wanted, {wanted: replicas}, "converged")
        self.served = before  # swarm's failure_action: rollback
        return Convergence(True, False, before, {}, "update rolled back: task unhealthy")

    def _canary_version(self) -> int:
        return int([c for c in self.calls if c.startswith("canary v")][-1].split()[1][1:])

    def _wanted(self) -> int:
        return int([c for c in self.calls if c.startswith("fetch ")][-1].split("[")[1].split(",")[0].rstrip("]"))

    def remove(self, name: str) -> None:
        self.calls.append(f"remove {name}")
        if name == SERVICE:
            self.served = None
        if name == CANARY:
            self.canary_left = False

    def service_logs(self, name: str, tail: int) -> str:
        return f"logs of {name}"

    def logs(self, tail: int) -> str:
        return "all logs"

    def drop_unused(self, model: str) -> None:
        if self.unused_fails:
            self.unused_fails -= 1
            raise ConnectionError("engine gone")
        self.calls.append("drop unused")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


def engine(swarm: FakeSwarm, **cfg: Any) -> SwarmEngine:
    rollout = RolloutConfig(target="swarm", **cfg)
    return SwarmEngine(swarm, rollout, clock=Clock(), sleep=lambda s: None)


def passing(endpoint: str, version: int) -> tuple[bool, str]:
    return True, f"golden set matches at {endpoint}"


def failing(endpoint: str, version: int) -> tuple[bool, str]:
    return False, f"max |diff| 0.25 at {endpoint}"


def test_first_deploy_is_checked_on_the_service_itself_and_cleans_up():
    swarm = FakeSwarm()
    report = engine(swarm).rollout(M, 1, check=passing)
    assert report.ok and report.action == "first-deploy" and report.previous is None
    assert report.canary is None and report.verify is not None and report.verify.ok
    assert report.verify.endpoint == swarm.endpoint
    assert swarm.calls == ["manager", "lock", "first-deploy v1", f"wait {SERVICE}", "drop unused", "unlock"]
    assert report.to_json()["verify"] == {"ok": True, "reason": "golden set matches at 127.0.0.1:8500",
                                          "endpoint": "127.0.0.1:8500"}


def test_first_deploy_that_fails_its_check_is_removed():
    swarm = FakeSwarm()
    with pytest.raises(SwarmRolloutFailed, match="verification failed: max") as err:
        engine(swarm).rollout(M, 1, check=failing)
    assert "first deploy failed: service removed, nothing is served" in err.value.report.detail
    assert f"remove {SERVICE}" in swarm.calls and swarm.served is None and not swarm.locked


def test_update_runs_the_canary_on_its_own_port_before_touching_the_service():
    swarm = FakeSwarm(served=1)
    report = engine(swarm, grpc_port=8500).rollout(M, 2, check=passing)
    assert report.ok and report.action == "update" and report.previous == 1 and swarm.served == 2
    assert report.canary is not None and report.canary.ok and report.canary.endpoint == "127.0.0.1:8501"
    assert report.verify is None  # the canary was the check
    i = swarm.calls.index
    assert i(f"remove {CANARY}") < i("canary v2 :8501") < i(f"wait {CANARY}") < i("update v2")
    assert swarm.calls.count(f"remove {CANARY}") == 2  # a leftover first, its own after the check


def test_failed_canary_leaves_the_service_alone():
    swarm = FakeSwarm(served=1)
    with pytest.raises(SwarmRolloutFailed, match="canary failed: max") as err:
        engine(swarm, canary_port=9100).rollout(M, 2, check=failing)
    report = err.value.report
    assert report.action == "update" and not report.ok and not report.rolled_back
    assert report.canary is not None and report.canary.endpoint == "127.0.0.1:9100"
    assert "update v2" not in swarm.calls and swarm.served == 1 and not swarm.locked
    assert report.to_json()["canary"]["reason"].startswith("max |diff|")


def test_unhealthy_canary_reports_its_logs():
    swarm = FakeSwarm(served=1, canary_healthy=False)
    with pytest.raises(SwarmRolloutFailed, match="canary replica not healthy: task failed") as err:
        engine(swarm).rollout(M, 2, check=passing)
    assert err.value.report.canary is not None and err.value.report.canary.logs == f"logs of {CANARY}"
    assert swarm.served == 1


def test_failed_fetch_touches_nothing_and_removes_a_new_fetch_service():
    swarm = FakeSwarm(fetch_mode="sidecar", served=None, fetch_ok=False)
    with pytest.raises(SwarmRolloutFailed, match="fetch failed: task failed: sha256 mismatch") as err:
        engine(swarm).rollout(M, 1, check=passing)
    report = err.value.report
    assert report.fetch is not None and report.fetch.action == "create" and not report.fetch.ok
    assert report.fetch.logs == f"logs of {FETCH}" and f"remove {FETCH}" in swarm.calls
    assert not any(c.startswith(("first-deploy", "canary")) for c in swarm.calls)
    assert "logs" in report.to_json()["fetch"] and "note" not in report.to_json()["fetch"]


def test_sidecar_update_keeps_the_serving_version_on_disk():
    swarm = FakeSwarm(fetch_mode="sidecar", served=1, fetch_exists=True)
    report = engine(swarm).rollout(M, 2, check=passing)
    assert report.ok and report.fetch is not None and report.fetch.versions == [2, 1]
    assert report.fetch.action == "update" and f"remove {FETCH}" not in swarm.calls
    assert swarm.calls.index("fetch [2, 1]") < swarm.calls.index("canary v2 :8501")


def test_health_failure_during_the_update_is_rolled_back_by_swarm():
    swarm = FakeSwarm(served=1, converges=False)
    with pytest.raises(SwarmRolloutFailed, match="update rolled back") as err:
        engine(swarm).rollout(M, 2, check=passing)
    assert err.value.report.rolled_back and swarm.served == 1
    assert "all logs" not in str(err.value)  # swarm rolled back: the fleet's logs are not the news
    assert f"remove {SERVICE}" not in swarm.calls and not swarm.locked


def test_same_version_is_already_stable_and_changes_nothing():
    swarm = FakeSwarm(served=3)
    report = engine(swarm).rollout(M, 3, check=passing)
    assert report.ok and report.action == "already-stable"
    assert swarm.calls == ["manager", "lock", "unlock"]


def test_clean_up_after_the_commit_point_is_owed_not_undone():
    swarm = FakeSwarm(served=1, unused_fails=5)
    report = engine(swarm).rollout(M, 2, check=passing)
    assert report.ok and swarm.served == 2
    assert "removing unused configs/secrets failed after 3 attempts: engine gone" in report.cleanup_pending


def test_a_held_lock_refuses_before_anything_changes():
    swarm = FakeSwarm(served=1, locked=True)
    with pytest.raises(RolloutError, match="another rollout is in progress"):
        engine(swarm).rollout(M, 2, check=passing)
    assert swarm.calls == ["manager"] and swarm.served == 1


def test_rollback_drops_a_canary_left_behind_first():
    swarm = FakeSwarm(served=2, canary_left=True)
    result = engine(swarm).rollback(M, committed=lambda: [1, 2], check_for=lambda v: passing)
    assert result["action"] == "dropped-canary" and result["version"] == 2 and swarm.served == 2
    assert f"remove {CANARY}" in swarm.calls and not swarm.locked


def test_rollback_goes_to_the_committed_version_below_through_a_canary():
    swarm = FakeSwarm(served=3)
    checked: list[int] = []

    def check_for(version: int):
        checked.append(version)
        return passing

    result = engine(swarm).rollback(M, committed=lambda: [1, 2, 3], check_for=check_for)
    assert result["action"] == "rollback" and result["previous"] == 3 and result["version"] == 2
    assert checked == [2] and swarm.served == 2 and "canary v2 :8501" in swarm.calls
    assert swarm.calls.count("lock") == 1 and not swarm.locked


def test_rollback_with_nothing_below_changes_nothing():
    swarm = FakeSwarm(served=1)
    result = engine(swarm).rollback(M, committed=lambda: [1], check_for=lambda v: passing)
    assert result["action"] == "none" and "stays on v1" in result["note"] and swarm.served == 1


def test_rollback_without_a_service_is_an_error():
    with pytest.raises(RolloutError, match="nothing to roll back"):
        engine(FakeSwarm()).rollback(M, committed=lambda: [1], check_for=lambda v: passing)
