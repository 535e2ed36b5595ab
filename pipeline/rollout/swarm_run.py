"""`tfrollout rollout | rollback` and the deploy's rollout stage for the swarm target.

The config-reload machine (`pipeline/rollout/machine.py`) cannot drive a replicated service,
so the swarm path is its own small driver: pick the committed version, build the golden-set
check (the same verifier the machine uses), and let `SwarmTarget.rollout` do the rest.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pipeline.config import DeployConfig
from pipeline.errors import RolloutError, StorageError
from pipeline.results import ExportOutput
from pipeline.rollout.plan import previous_version
from pipeline.rollout.session import (
    committed_version,
    committed_versions,
    golden_for,
    golden_verifier,
)
from pipeline.targets.swarm import Check, SwarmReport, SwarmTarget, joined


def golden_check(cfg: DeployConfig, model: str, golden: Path) -> Check:
    """(endpoint, version) -> (ok, reason): the golden set against that endpoint, as `verify` runs it."""
    def check(endpoint: str, version: int) -> tuple[bool, str]:
        outcome = golden_verifier(cfg, endpoint, model, golden)(version, None, cfg.rollout.verify_timeout_s)
        return outcome.ok, outcome.reason

    return check


def rollout_swarm(cfg: DeployConfig, model: str, version: int | None, *, verify: bool,
                  golden: Path | None = None, canary_port: int | None = None,
                  target: SwarmTarget | None = None, last: ExportOutput | None = None) -> SwarmReport:
    """Roll a committed version (default: the newest) across the service; SwarmRolloutFailed otherwise.

    `golden`: the export's golden set (the deploy has it on disk); else the last run's export
    (`last`) if it is that version, else the copy inside the committed version, pulled from the store."""
    store, wanted = committed_version(cfg, model, version)
    target = target or SwarmTarget(cfg.rollout)
    with tempfile.TemporaryDirectory(prefix="tfrollout-golden-") as scratch:
        check = None
        if verify and cfg.rollout.verify_canary:
            golden = golden or golden_for(store, model, wanted, Path(scratch), last)
            check = golden_check(cfg, model, golden)
        return target.rollout(model, wanted, cfg.storage, check=check,
                              canary_port=canary_port or cfg.rollout.canary_port)


def rollback_swarm(cfg: DeployConfig, model: str, *, target: SwarmTarget | None = None) -> dict[str, Any]:
    """Remove a crashed rollout's canary service, else roll the service back to the newest committed
    version below the one its spec pins — through the same canary check as a rollout (the store
    must be reachable: replicas fetch from it). Once the service has converged, a lock that
    cannot be released is a warning (`cleanup_pending`), not a failure."""
    target = target or SwarmTarget(cfg.rollout)
    target.require_manager()
    target.lock(f"tfrollout rollback {model}", cfg.rollout.lock_stale_s)
    try:
        result = _rollback_locked(cfg, model, target)
    except BaseException:
        target.release_lock()  # the rollback's own error is the one to report
        raise
    result["cleanup_pending"] = joined(result.get("cleanup_pending"), target.release_lock())
    return result


def _rollback_locked(cfg: DeployConfig, model: str, target: SwarmTarget) -> dict[str, Any]:
    if target.drop_canary(model):
        return {"ok": True, "action": "dropped-canary", "model": model,
                "version": target.served_version(model), "service": target.service(model)}
    current = target.served_version(model)
    if current is None:
        raise RolloutError(f"nothing to roll back: no swarm service {target.service(model)} serves {model!r}")
    try:
        _, committed = committed_versions(cfg, model)
    except StorageError as exc:
        raise RolloutError(f"swarm rollback needs the store (replicas fetch the version from it): "
                           f"{exc}") from None
    previous = previous_version(committed, committed, current)
    if previous is None:  # nothing to do is not a failure: say so, change nothing
        return {"ok": True, "action": "none", "model": model, "version": current,
                "service": target.service(model),
                "note": f"nothing to roll back: no committed version of {model!r} below v{current}; "
                        f"the service stays on v{current}"}
    report = rollout_swarm(cfg, model, previous, verify=True, target=target)
    return {**report.to_json(), "action": "rollback", "previous": current}
