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
from pipeline.rollout.session import (
    committed_version,
    committed_versions,
    golden_for,
    golden_verifier,
)
from pipeline.rollout.swarm_engine import Check, SwarmEngine, SwarmReport
from pipeline.targets.swarm import SwarmTarget
from pipeline.targets.swarm.edge import SwarmRolloutEdge


def golden_check(cfg: DeployConfig, model: str, golden: Path) -> Check:
    """(endpoint, version) -> (ok, reason): the golden set against that endpoint, as `verify` runs it."""
    def check(endpoint: str, version: int) -> tuple[bool, str]:
        outcome = golden_verifier(cfg, endpoint, model, golden)(version, None, cfg.rollout.verify_timeout_s)
        return outcome.ok, outcome.reason

    return check


def swarm_engine(cfg: DeployConfig, target: SwarmTarget | None = None) -> SwarmEngine:
    """The swarm engine over the configured service (or `target`) and store."""
    return SwarmEngine(SwarmRolloutEdge(target or SwarmTarget(cfg.rollout), cfg.storage), cfg.rollout)


def rollout_swarm(cfg: DeployConfig, model: str, version: int | None, *, verify: bool,
                  golden: Path | None = None, canary_port: int | None = None,
                  target: SwarmTarget | None = None, last: ExportOutput | None = None) -> SwarmReport:
    """Roll a committed version (default: the newest) across the service; SwarmRolloutFailed otherwise.

    `golden`: the export's golden set (the deploy has it on disk); else the last run's export
    (`last`) if it is that version, else the copy inside the committed version, pulled from the store."""
    store, wanted = committed_version(cfg, model, version)
    engine = swarm_engine(cfg, target)
    with tempfile.TemporaryDirectory(prefix="tfrollout-golden-") as scratch:
        check = None
        if verify and cfg.rollout.verify_canary:
            golden = golden or golden_for(store, model, wanted, Path(scratch), last)
            check = golden_check(cfg, model, golden)
        return engine.rollout(model, wanted, check=check, canary_port=canary_port or cfg.rollout.canary_port)


def rollback_swarm(cfg: DeployConfig, model: str, *, target: SwarmTarget | None = None) -> dict[str, Any]:
    """Remove a crashed rollout's canary service, else roll the service back to the newest committed
    version below the one its spec pins — through the same canary check as a rollout (the store
    must be reachable: replicas fetch from it). Once the service has converged, a lock that
    cannot be released is a warning (`cleanup_pending`), not a failure."""

    def committed() -> list[int]:
        try:
            return committed_versions(cfg, model)[1]
        except StorageError as exc:
            raise RolloutError(f"swarm rollback needs the store (replicas fetch the version from it): "
                               f"{exc}") from None

    with tempfile.TemporaryDirectory(prefix="tfrollout-golden-") as scratch:
        def check_for(version: int) -> Check | None:
            if not cfg.rollout.verify_canary:
                return None
            store, _ = committed_version(cfg, model, version)
            return golden_check(cfg, model, golden_for(store, model, version, Path(scratch)))

        return swarm_engine(cfg, target).rollback(model, committed, check_for)
