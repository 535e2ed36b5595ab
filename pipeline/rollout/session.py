"""Wire a complete rollout Machine for one model: target + host + delivery + verifier.

Shared by the rollout stage, `tfrollout rollout|rollback` and the tests, so every caller
gets the same machine: the verifier is part of it from construction, never patched in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import DeployConfig
from pipeline.errors import StorageError, TfRolloutError
from pipeline.results import ExportOutput
from pipeline.rollout.host import Fetcher, ServingHost
from pipeline.rollout.machine import Deadlines, Machine, Verifier, VerifyOutcome, wall_clock_owner
from pipeline.rollout.pending import PendingCleanup
from pipeline.storage import Store, open_store
from pipeline.targets import ReloadableTarget, open_reloadable
from pipeline.verify.compare import Tolerance
from pipeline.verify.golden import GOLDEN_FILE, load_golden
from pipeline.verify.promote_gate import (
    BROKEN_STABLE_CODES,
    accuracy,
    gate_applies,
    promote_verdict,
    score_label,
)
from pipeline.verify.runner import ServedModel, make_client, verify_endpoint, verify_served
from serving.client.errors import ClientError


@dataclass
class Session:
    """One model's rollout on one serving target; `close()` releases the gRPC channel."""

    model: str
    target: ReloadableTarget
    host: ServingHost
    machine: Machine

    def close(self) -> None:
        self.host.close()


def committed_versions(cfg: DeployConfig, model: str) -> tuple[Store, list[int]]:
    """(store, committed versions); StorageError when the store is unreachable — before any host I/O."""
    store = open_store(cfg.storage)
    try:
        versions = sorted(v.version for v in store.committed_versions(model))
    except TfRolloutError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore/OS errors: name the store
        raise StorageError(f"store {store.uri} unreachable: {type(exc).__name__}: {exc}") from None
    return store, versions


def committed_version(cfg: DeployConfig, model: str, version: int | None) -> tuple[Store, int]:
    """(store, `version` or the newest committed one); StorageError if it is not committed."""
    store, committed = committed_versions(cfg, model)
    if not committed:
        raise StorageError(f"no committed version of {model!r} in {store.uri}")
    wanted = version or committed[-1]
    if wanted not in committed:
        raise StorageError(f"{model} version {wanted} is not committed in {store.uri}")
    return store, wanted


def golden_verifier(cfg: DeployConfig, address: str, model: str, golden: Path) -> Verifier:
    """Verify a served version/label against the export's golden set, as the verify stage does
    (same tolerance, signature and TLS settings from `[verify]`)."""
    v = cfg.verify
    endpoint = verify_endpoint(v, cfg.rollout, address)
    data = load_golden(golden)
    tol = Tolerance.of(v)

    def verify(version: int | None, label: str | None, timeout_s: float) -> VerifyOutcome:
        wanted = ServedModel(model, version, label, v.signature)
        try:
            report = verify_served(endpoint, wanted, data, tol, deadline_s=min(v.deadline_s, timeout_s),
                                   batch_size=v.batch_size)
        except TfRolloutError as exc:
            return VerifyOutcome(False, str(exc), {})
        if report["ok"] and label == cfg.rollout.canary_label and gate_applies(cfg.gate):
            return gate_canary(report, min(v.deadline_s, timeout_s))
        return VerifyOutcome(bool(report["ok"]), str(report.get("reason") or ""), report)

    def gate_canary(report: dict, deadline_s: float) -> VerifyOutcome:
        """The quality gate on the served canary vs stable (promote_gate), fail closed."""
        if data.labels is None:
            reason = (f"quality gate before promote: the golden set {data.path} has no labels (exported "
                      "before they were recorded); re-export, or set gate.enforce = false")
            report["gate"] = {"passed": False, "reason": reason}
            return VerifyOutcome(not cfg.gate.enforce, reason, report)
        try:
            with make_client(endpoint, deadline_s) as client:
                canary = accuracy(score_label(client, model, cfg.rollout.canary_label, v.signature, data.inputs),
                                  data.labels)
                stable = None
                if cfg.gate.max_drop_vs_serving is not None:
                    try:
                        stable = accuracy(score_label(client, model, cfg.rollout.stable_label, v.signature,
                                                      data.inputs), data.labels)
                    except ClientError as exc:
                        if exc.code not in BROKEN_STABLE_CODES:
                            raise  # not reachable: a check that could not run (fail closed)
                        stable = math.nan  # it answered with an error: broken (promote_verdict decides)
        except Exception as exc:  # noqa: BLE001 - a check that could not run is a failure
            reason = f"quality gate before promote: could not score the served model: {exc}"
            report["gate"] = {"passed": False, "reason": reason}
            return VerifyOutcome(False, reason, report)
        verdict = promote_verdict(cfg.gate, canary, stable, int(len(data.labels)))
        report["gate"] = {**verdict.report, "reason": verdict.reason}
        return VerifyOutcome(verdict.ok, verdict.reason, report)

    return verify


def open_session(cfg: DeployConfig, model: str, *, store: Store | None,
                 golden: Path | None = None) -> Session:
    """A complete machine for `model`.

    Delivery: with `rollout.model_base_path` the runtime reads the store itself; else
    versions are pulled from `store`; with no store (unreachable) only versions already
    on the host can be used — enough to restore or roll back. With `golden` (and
    `rollout.verify_canary`) every new version is verified before it becomes stable.
    """
    r = cfg.rollout
    target = open_reloadable(r, cfg.run.workdir)
    passthrough = r.model_base_path is not None
    fetch: Fetcher | None = None
    if store is not None and not passthrough:
        fetch = store.pull
    listing = None
    if passthrough and store is not None:
        listing = lambda name: [v.version for v in store.committed_versions(name)]  # noqa: E731
    host = ServingHost(target, fetch, passthrough=passthrough, lock_stale_s=r.lock_stale_s,
                       store_versions=listing)
    verifier = (golden_verifier(cfg, target.endpoint, model, golden)
                if golden is not None and r.verify_canary else None)
    deadlines = Deadlines(start=r.start_timeout_s, deliver=r.deliver_timeout_s, load=r.load_timeout_s,
                          verify=r.verify_timeout_s, label=r.label_timeout_s)
    machine = Machine(host, verifier, deadlines=deadlines, log_tail=r.log_tail, stable_label=r.stable_label,
                      canary_label=r.canary_label, owner=wall_clock_owner(),
                      pending=PendingCleanup(cfg.run.workdir))
    return Session(model, target, host, machine)


def golden_for(store: Store, model: str, version: int, scratch: Path,
               last: ExportOutput | None = None) -> Path:
    """The golden set of a committed version: the last run's export (`last`) if it is that version,
    else the copy that travels inside the committed version (pulled, sha256-verified, into `scratch`)."""
    if last is not None and last.model_name == model and last.version == version and last.golden.is_file():
        return last.golden
    return store.pull(model, version, scratch / str(version)) / GOLDEN_FILE
