"""Wire a Machine for a config: target + store fetcher + golden-set verifier (shared by stage and commands)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import DeployConfig
from pipeline.errors import StorageError, TfRolloutError
from pipeline.rollout.host import ServingHost
from pipeline.rollout.machine import Deadlines, Machine, Verifier, VerifyOutcome, wall_clock_owner
from pipeline.targets import ServingTarget, open_target


@dataclass
class Session:
    target: ServingTarget
    host: ServingHost
    machine: Machine

    def close(self) -> None:
        self.host.close()


def committed_versions(cfg: DeployConfig, model: str) -> tuple[Any, list[int]]:
    """(store, committed versions); StorageError when the store is unreachable — before any host I/O."""
    from pipeline.storage import open_store

    store = open_store(cfg.storage)
    try:
        versions = sorted(v.version for v in store.committed_versions(model))
    except TfRolloutError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore/OS errors: name the store
        raise StorageError(f"store {store.uri} unreachable: {type(exc).__name__}: {exc}") from None
    return store, versions


def golden_verifier(cfg: DeployConfig, endpoint: str, model: str, golden: Path) -> Verifier:
    """Verify a served version/label against the export's golden set (as the verify stage does)."""
    from pipeline.verify.compare import Tolerance
    from pipeline.verify.golden import load_golden
    from pipeline.verify.runner import Target as VTarget
    from pipeline.verify.runner import verify_served

    v = cfg.verify
    data = load_golden(golden)
    tol = Tolerance(v.atol, v.rtol, v.min_agreement)

    def verify(version: int | None, label: str | None, timeout_s: float) -> VerifyOutcome:
        target = VTarget(endpoint, model, version, label, v.signature)
        try:
            report = verify_served(target, data, tol, deadline_s=min(v.deadline_s, timeout_s),
                                   batch_size=v.batch_size)
        except TfRolloutError as exc:
            return VerifyOutcome(False, str(exc), {})
        return VerifyOutcome(bool(report["ok"]), str(report.get("reason") or ""), report)

    return verify


def open_session(cfg: DeployConfig, *, store: Any | None, verifier_for: Any = None) -> Session:
    """ServingTarget + host (+ machine without a verifier; set `session.machine.verifier` when verifying)."""
    r = cfg.rollout
    target = open_target(r, cfg.run.workdir)
    fetch = None
    if r.model_base_path is None:
        if store is None:
            raise StorageError("a store is needed to deliver versions to the serving host")
        fetch = lambda model, version, dest: store.pull(model, version, dest)  # noqa: E731
    host = ServingHost(target, fetch, lock_stale_s=r.lock_stale_s)
    deadlines = Deadlines(start=r.start_timeout_s, deliver=r.deliver_timeout_s, load=r.load_timeout_s,
                          verify=r.verify_timeout_s, label=r.label_timeout_s)
    machine = Machine(host, None, deadlines=deadlines, log_tail=r.log_tail, stable_label=r.stable_label,
                      canary_label=r.canary_label, owner=wall_clock_owner())
    return Session(target, host, machine)
