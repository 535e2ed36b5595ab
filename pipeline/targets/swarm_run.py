"""`tfrollout rollout` for the swarm target: a committed version, checked on a canary replica.

The config-reload machine (`pipeline/rollout/machine.py`) cannot drive a replicated service,
so the swarm path is its own small driver: pick the committed version, build the golden-set
check (the same verifier the machine uses), and let `SwarmTarget.rollout` do the rest.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.config import DeployConfig
from pipeline.targets.swarm import Check, SwarmReport, SwarmTarget


def golden_check(cfg: DeployConfig, model: str, golden: Path) -> Check:
    """(endpoint, version) -> (ok, reason): the golden set against that endpoint, as `verify` runs it."""
    from pipeline.rollout.session import golden_verifier

    def check(endpoint: str, version: int) -> tuple[bool, str]:
        outcome = golden_verifier(cfg, endpoint, model, golden)(version, None, cfg.rollout.verify_timeout_s)
        return outcome.ok, outcome.reason

    return check


def rollout_swarm(cfg: DeployConfig, model: str, version: int | None, *, verify: bool,
                  canary_port: int | None = None, target: SwarmTarget | None = None) -> SwarmReport:
    """Roll a committed version (default: the newest) across the service; SwarmRolloutFailed otherwise."""
    from pipeline.rollout.session import committed_version, golden_for

    store, wanted = committed_version(cfg, model, version)
    target = target or SwarmTarget(cfg.rollout)
    with tempfile.TemporaryDirectory(prefix="tfrollout-golden-") as scratch:
        check = None
        if verify and cfg.rollout.verify_canary:
            check = golden_check(cfg, model, golden_for(cfg, store, model, wanted, Path(scratch)))
        return target.rollout(model, wanted, cfg.storage, check=check, canary_port=canary_port)
