"""The swarm rollout's decisions, apart from the Docker calls that carry them out.

A replicated service cannot be driven through one runtime's ModelService (the shared
port reaches a replica at random), so here the service *spec* is the unit of change.
What to do is decided here, over a narrow `SwarmEdge` (write a spec, wait for swarm to
converge, list replicas, remove a service) that `targets.swarm.SwarmTarget` implements:

- same version already pinned → nothing to do;
- sidecar mode: the fetch service must hold the verified version on every node first,
  or nothing else is touched;
- an update: a one-replica canary on its own port passes the golden-set check first,
  or the service is not touched;
- a first deploy: checked on the service itself after it converged;
- converged on the version (and verified) is the commit point: clean-up after it is
  retried, then owed, never undone; a failed first deploy is removed, a failed update
  is rolled back by swarm (`failure_action: rollback`).

Time comes from an injected clock, so the unit tests drive every path with a fake edge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from pipeline.cleanup import CLEANUP_ATTEMPTS, joined, retried
from pipeline.config import RolloutConfig
from pipeline.errors import RolloutError, TfRolloutError
from pipeline.rollout.plan import previous_version
from pipeline.targets.swarm.spec import Applied, Convergence

# (endpoint, version) -> (ok, reason): e.g. the golden set against that endpoint
Check = Callable[[str, int], tuple[bool, str]]


def _without_empty(data: dict[str, Any], *optional: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in optional or v}


@dataclass
class FetchResult:
    """Sidecar mode: the fetch service's update (every node's volume holds the verified bytes)."""

    ok: bool
    action: str  # create | update | unchanged
    service: str
    versions: list[int]
    nodes: int
    detail: str
    duration_s: float
    note: str = ""
    logs: str = ""

    def to_json(self) -> dict[str, Any]:
        return _without_empty(asdict(self), "note", "logs")


@dataclass
class CanaryResult:
    """The one-replica canary service, checked on its own port before the service is touched."""

    ok: bool
    reason: str
    endpoint: str
    duration_s: float
    logs: str = ""

    def to_json(self) -> dict[str, Any]:
        return _without_empty(asdict(self), "logs")


@dataclass
class VerifyResult:
    """A first deploy's check on the service itself."""

    ok: bool
    reason: str
    endpoint: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SwarmReport:
    """What a swarm rollout did, for the run record and `--json`."""

    model: str
    version: int
    service: str
    action: str = ""
    previous: int | None = None
    ok: bool = False
    rolled_back: bool = False
    duration_s: float = 0.0
    detail: str = ""
    replicas: list[dict[str, Any]] = field(default_factory=list)
    canary: CanaryResult | None = None
    verify: VerifyResult | None = None
    fetch: FetchResult | None = None
    cleanup_pending: str | None = None  # converged on the version; clean-up after it still failed

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("canary", "verify", "fetch"):
            part = getattr(self, key)
            out[key] = None if part is None else part.to_json()
        return out


class SwarmRolloutFailed(RolloutError):
    """The new spec did not converge; swarm rolled back (or the first deploy was removed)."""

    def __init__(self, message: str, report: SwarmReport) -> None:
        super().__init__(message)
        self.report = report
        self.details = report.to_json()


class SwarmEdge(Protocol):
    """The Docker side of a swarm rollout (`targets.swarm.SwarmTarget`)."""

    endpoint: str
    fetch_mode: str  # "agent" | "sidecar"

    def require_manager(self) -> None: ...
    def lock(self, owner: str, stale_after_s: float) -> None: ...
    def unlock(self) -> None: ...
    def manifest(self, model: str, version: int) -> bytes: ...
    def service(self, model: str) -> str: ...
    def has_service(self, model: str) -> bool: ...
    def has_service_named(self, name: str) -> bool: ...
    def served_version(self, model: str) -> int | None: ...
    def replicas(self, model: str) -> list[dict[str, Any]]: ...
    def apply_fetch(self, model: str, version: int, versions: list[tuple[int, bytes]]) -> Applied: ...
    def apply_service(self, model: str, version: int, manifest: bytes) -> Applied: ...
    def start_canary(self, model: str, version: int, manifest: bytes, port: int) -> Applied: ...
    def canary_name(self, model: str) -> str: ...
    def fetch_name(self, model: str) -> str: ...
    def wait(self, name: str, replicas: int, timeout_s: float, *, fail_fast: bool = False) -> Convergence: ...
    def remove(self, name: str) -> None: ...
    def service_logs(self, name: str, tail: int) -> str: ...
    def logs(self, tail: int) -> str: ...
    def drop_unused(self, model: str) -> None: ...


class SwarmEngine:
    """Rollout and rollback of one model's replicated service."""

    def __init__(self, edge: SwarmEdge, cfg: RolloutConfig, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.edge, self.cfg, self.clock, self.sleep = edge, cfg, clock, sleep

    # ------------------------------------------------------------- lock
    def release_lock(self) -> str | None:
        """Unlock, retried; None, or why the lock stays (its holder is this process: once it has
        exited, the next rollout breaks the lock as a crashed holder's)."""
        error = retried(self.edge.unlock, CLEANUP_ATTEMPTS, sleep=self.sleep)
        return None if error is None else (f"rollout lock not released after {CLEANUP_ATTEMPTS} attempts: "
                                           f"{error}; the next rollout breaks it")

    def _locked(self, owner: str, work: Callable[[], Any]) -> Any:
        self.edge.require_manager()
        self.edge.lock(owner, self.cfg.lock_stale_s)
        try:
            result = work()
        except BaseException:
            self.release_lock()  # the rollout's own error is the one to report
            raise
        note = self.release_lock()
        if isinstance(result, SwarmReport):
            result.cleanup_pending = joined(result.cleanup_pending, note)
        else:
            result["cleanup_pending"] = joined(result.get("cleanup_pending"), note)
        return result

    # ------------------------------------------------------------- rollout
    def rollout(self, model: str, version: int, *, check: Check | None = None,
                canary_port: int | None = None, timeout_s: float | None = None) -> SwarmReport:
        """Make every replica serve `version` (committed in the store) or leave the previous spec serving,
        holding the rollout lock throughout."""
        return self._locked(f"tfrollout rollout {model} v{version}",
                            lambda: self._rollout(model, version, check, canary_port, timeout_s))

    def _failed(self, report: SwarmReport, t0: float, action: str, detail: str, extra: str = "") -> None:
        report.action, report.duration_s = action, round(self.clock() - t0, 3)
        report.detail = detail
        report.replicas = self.edge.replicas(report.model)
        raise SwarmRolloutFailed(f"swarm rollout of {report.model} version {report.version} failed: "
                                 f"{report.detail}{extra}", report)

    def _rollout(self, model: str, version: int, check: Check | None, canary_port: int | None,
                 timeout_s: float | None) -> SwarmReport:
        edge, t0 = self.edge, self.clock()
        report = SwarmReport(model, int(version), edge.service(model))
        manifest = edge.manifest(model, version)
        exists = edge.has_service(model)
        previous = edge.served_version(model)
        report.previous = previous
        if previous == version and exists:
            report.action, report.ok = "already-stable", True
            report.replicas = edge.replicas(model)
            return report
        first = "first-deploy" if not exists else "update"
        if edge.fetch_mode == "sidecar":
            report.fetch = self._fetch(model, version, manifest, previous)
            if not report.fetch.ok:
                self._failed(report, t0, first, f"fetch failed: {report.fetch.detail}; the serving service "
                             "was not touched", f"; {report.fetch.logs}")
        if exists and check is not None:
            report.canary = self._canary(model, version, manifest, check, canary_port)
            if not report.canary.ok:
                self._failed(report, t0, "update", f"canary failed: {report.canary.reason}; the service was "
                             "not touched")
        applied = edge.apply_service(model, version, manifest)
        report.action = applied.action
        limit = timeout_s or (self.cfg.start_timeout_s
                              + applied.replicas * (self.cfg.load_timeout_s + self.cfg.swarm_monitor_s))
        state = edge.wait(applied.name, applied.replicas, limit)
        report.replicas = edge.replicas(model)
        report.detail = state.detail
        if state.ok and state.version == version and applied.action == "first-deploy" and check is not None:
            ok, reason = check(edge.endpoint, version)
            report.verify = VerifyResult(ok, reason, edge.endpoint)
            if not ok:
                state = Convergence(True, False, version, state.running, f"verification failed: {reason}")
                report.detail = state.detail
        report.duration_s = round(self.clock() - t0, 3)
        if state.ok and state.version == version:
            report.ok = True  # the commit point: every replica serves the verified version; never undone
            error = retried(lambda: edge.drop_unused(model), CLEANUP_ATTEMPTS, sleep=self.sleep)
            if error is not None:
                report.cleanup_pending = (f"removing unused configs/secrets failed after {CLEANUP_ATTEMPTS} "
                                          f"attempts: {error}; the next rollout, rollback or status retries")
            return report
        if applied.action == "first-deploy":
            edge.remove(applied.name)
            if edge.fetch_mode == "sidecar":
                edge.remove(edge.fetch_name(model))
            report.detail += "; first deploy failed: service removed, nothing is served"
        else:
            report.rolled_back = state.version != version
        raise SwarmRolloutFailed(f"swarm rollout of {model} version {version} failed: {report.detail}"
                                 f"{'; ' + edge.logs(40) if not report.rolled_back else ''}", report)

    def _fetch(self, model: str, version: int, manifest: bytes, previous: int | None) -> FetchResult:
        """Point the fetch service at `version` plus the version serving now (swarm's rollback target
        must stay on disk) and wait until it is healthy on every node. A version that cannot be
        proven fails the fetch task: swarm rolls the fetch service back, or a new one is removed."""
        t0 = self.clock()
        versions = [(int(version), manifest)]
        note = ""
        if previous is not None and previous != version:
            try:
                versions.append((int(previous), self.edge.manifest(model, previous)))
            except TfRolloutError as exc:  # e.g. removed from the store: the nodes keep what they hold now
                note = f"v{previous} (serving now) left out of the fetch spec: {exc}"
        applied = self.edge.apply_fetch(model, version, versions)
        limit = self.cfg.start_timeout_s + applied.replicas * (self.cfg.deliver_timeout_s
                                                               + self.cfg.swarm_monitor_s)
        state = self.edge.wait(applied.name, applied.replicas, limit, fail_fast=applied.action == "create")
        result = FetchResult(ok=state.ok and state.version == version, action=applied.action,
                             service=applied.name, versions=[v for v, _ in versions], nodes=applied.replicas,
                             detail=state.detail, duration_s=round(self.clock() - t0, 3), note=note)
        if not result.ok:
            result.logs = self.edge.service_logs(applied.name, 40)
            if applied.action == "create":
                self.edge.remove(applied.name)
        return result

    def _canary(self, model: str, version: int, manifest: bytes, check: Check,
                port: int | None) -> CanaryResult:
        """Run `version` as a one-replica service on its own port, check it there, remove it."""
        t0 = self.clock()
        port = port or self.cfg.canary_port or self.cfg.grpc_port + 1
        endpoint = f"{self.cfg.host}:{port}"
        self.edge.remove(self.edge.canary_name(model))  # a crashed rollout's leftover
        applied = self.edge.start_canary(model, version, manifest, port)
        try:
            state = self.edge.wait(applied.name, 1, self.cfg.start_timeout_s + self.cfg.load_timeout_s,
                                   fail_fast=True)
            if not (state.ok and state.version == version):
                return CanaryResult(False, f"canary replica not healthy: {state.detail}", endpoint,
                                    round(self.clock() - t0, 3), logs=self.edge.service_logs(applied.name, 40))
            ok, reason = check(endpoint, version)
            return CanaryResult(ok, reason, endpoint, round(self.clock() - t0, 3))
        finally:
            self.edge.remove(applied.name)

    # ------------------------------------------------------------- rollback
    def rollback(self, model: str, committed: Callable[[], list[int]],
                 check_for: Callable[[int], Check | None]) -> dict[str, Any]:
        """Drop a canary a crashed rollout left, else roll the service back to the committed version
        below the one it serves (checked like any rollout), under the rollout lock."""
        return self._locked(f"tfrollout rollback {model}", lambda: self._rollback(model, committed, check_for))

    def _rollback(self, model: str, committed: Callable[[], list[int]],
                  check_for: Callable[[int], Check | None]) -> dict[str, Any]:
        edge = self.edge
        canary = edge.canary_name(model)
        if edge.has_service_named(canary):
            edge.remove(canary)
            return {"ok": True, "action": "dropped-canary", "model": model,
                    "version": edge.served_version(model), "service": edge.service(model)}
        current = edge.served_version(model)
        if current is None:
            raise RolloutError(f"nothing to roll back: no swarm service {edge.service(model)} serves {model!r}")
        versions = committed()
        previous = previous_version(versions, versions, current)
        if previous is None:  # nothing to do is not a failure: say so, change nothing
            return {"ok": True, "action": "none", "model": model, "version": current,
                    "service": edge.service(model),
                    "note": f"nothing to roll back: no committed version of {model!r} below v{current}; "
                            f"the service stays on v{current}"}
        report = self._rollout(model, previous, check_for(previous), None, None)
        return {**report.to_json(), "action": "rollback", "previous": current}
