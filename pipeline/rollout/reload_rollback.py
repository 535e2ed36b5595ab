"""Rollback of a config-reload target: drop an unfinished canary, else restore the version verified before.

The machine (`Machine.rollback`) decides what to restore from the host's promotion
history; this module wires it for one model: the store's committed versions (or, with the
store unreachable and `verify=False`, the versions already on the host) and the check of
the version it would restore, with that version's golden set.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pipeline.config import DeployConfig
from pipeline.errors import RolloutError, StorageError
from pipeline.results import ExportOutput
from pipeline.rollout.history import rollback_target
from pipeline.rollout.machine import Verifier
from pipeline.rollout.session import (
    Session,
    committed_versions,
    golden_for,
    golden_verifier,
    open_session,
)
from pipeline.storage import Store


def rollback_model(cfg: DeployConfig, model: str, *, verify: bool = True,
                   last: ExportOutput | None = None) -> dict[str, Any]:
    """Drop an unfinished canary, else go back to the last version verified as stable before the
    current one (the host's promotion history), verified again with its own golden set.

    An unreachable store does not stop a rollback without verification (`verify=False`): the
    versions already on the host are used. Verifying needs the version's golden set from the
    store: without it the rollback is refused (fail closed), saying how to skip the check.
    """
    note = None
    store: Store | None = None
    committed: list[int] | None = None
    try:
        store, committed = committed_versions(cfg, model)
    except StorageError as exc:
        note = f"store unreachable ({exc}); using versions on the host"
    session = open_session(cfg, model, store=store)
    try:
        available = committed if committed is not None else session.target.versions(model)
        with tempfile.TemporaryDirectory(prefix="tfrollout-rollback-") as scratch:
            verifier = (rollback_verifier(cfg, session, store, model, available, Path(scratch), last)
                        if verify else None)
            report = session.machine.rollback(model, available, verifier=verifier)
    finally:
        session.close()
    notes = [text for text in (report.note, note) if text]
    return {**report.to_json(), "note": "; ".join(notes) or None}


def rollback_verifier(cfg: DeployConfig, session: Session, store: Store | None, model: str, available: list[int],
                      scratch: Path, last: ExportOutput | None = None) -> Verifier | None:
    """The check for the version a rollback would restore: its golden set, served under the
    canary label (no quality gate: the point is to leave the current stable). None when
    there is nothing to restore (the machine then says so)."""
    current = session.host.read(model)
    if current is None or current.stable is None or current.canary is not None:
        return None  # nothing served, or an unfinished canary to drop: nothing to verify
    target = rollback_target(session.host.promotions(model), set(session.host.versions_on_host(model)) & set(available),
                             current.stable)
    if target is None:
        return None
    if store is None:
        raise RolloutError(f"rollback to {model} v{target} verifies it with its golden set, which comes from the "
                           "store, and the store is unreachable; `tfrollout rollback --no-verify` restores it "
                           "unverified")
    golden = golden_for(store, model, target, scratch, last)
    plain = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"min_accuracy": None,
                                                                        "max_drop_vs_serving": None})})
    return golden_verifier(plain, session.target.endpoint, model, golden)
