"""rollout stage: the pushed version goes live on the serving target (canary -> verify -> promote).

The store is checked first: an unreachable store or an uncommitted version fails here,
before the serving host is touched. A comparison with serving the gate deferred (the run
that published the version stopped before rollout) runs next, before anything is
delivered: GateError (exit 9) unless it passes. The full report (steps, timings, runtime
logs on failure) is written to `<run workdir>/rollout.json` either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import DeployConfig
from pipeline.errors import GateError, RolloutError, StorageError
from pipeline.results import (
    ExportOutput,
    GateOutput,
    PushOutput,
    RolloutOutput,
    TransferOutput,
)
from pipeline.rollout.machine import RolloutFailed
from pipeline.rollout.session import committed_versions, open_session
from pipeline.run import RunRecord, StageContext, load_record
from pipeline.storage import Store


def owed_comparison(cfg: DeployConfig, record: RunRecord, note: Callable[[str], None]) -> dict[str, Any] | None:
    """The comparison with serving this record's gate deferred, run now (see gate.run_deferred_comparison)."""
    gate = record.find(GateOutput)
    if gate is None or gate.serving_deferred is None:
        return None
    from pipeline.stages.gate import run_deferred_comparison

    return run_deferred_comparison(cfg, gate, record.output(TransferOutput), note)


def check_before_rollout(cfg: DeployConfig, store: Store, model: str, version: int,
                         note: Callable[[str], None]) -> dict[str, Any] | None:
    """`tfrollout rollout` of a committed version: the comparison with serving its gate deferred
    (its manifest in the store says so, or this checkout's run record that exported it) runs
    before anything is delivered. It needs the held-out set, which only the run record that
    exported the version has: without it, refused (GateError), never skipped."""
    owed = None
    run_id = None
    for info in store.list_versions(model, version):
        if info.committed and info.manifest is not None:
            gate = info.manifest.export.get("quality_gate")
            owed = gate.get("serving_deferred") if isinstance(gate, dict) else None
            run_id = info.manifest.export.get("run_id")
    record = load_record(cfg)
    export = record.find(ExportOutput) if record is not None else None
    if (record is not None and export is not None and export.model_name == model and export.version == version
            and (run_id is None or run_id == record.run_id)):
        checked = owed_comparison(cfg, record, note)
        if checked is not None or not owed:
            return checked
    if owed:
        reason = owed.get("reason") if isinstance(owed, dict) else None
        raise GateError(f"quality gate: {model} v{version}'s comparison with serving was deferred at its gate "
                        f"({reason or 'the run stopped before rollout'}) and this checkout has no run record with "
                        "its held-out set to run it; roll it out where it was exported (`tfrollout rollout` or "
                        "`tfrollout deploy --from rollout`); nothing is delivered or promoted")
    return None


def run(ctx: StageContext) -> RolloutOutput:
    cfg = ctx.config
    push = ctx.output(PushOutput)
    export = ctx.output(ExportOutput)
    model, version = push.model_name, push.version
    if cfg.rollout.target == "swarm":
        checked = owed_comparison(cfg, ctx.record, ctx.reporter.note)
        return run_swarm(ctx, model, version, export.golden).model_copy(update={"serving_check": checked})
    store: Store | None = None
    if cfg.rollout.model_base_path is None:
        store, committed = committed_versions(cfg, model)
        if version not in committed:
            raise StorageError(f"{model} version {version} is not committed in {store.uri}; "
                               "run the push stage first")
    checked = owed_comparison(cfg, ctx.record, ctx.reporter.note)  # before the serving host changes
    session = open_session(cfg, model, store=store, golden=export.golden)
    path = ctx.workdir / "rollout.json"
    ctx.reporter.note(f"rolling out {model} v{version} to the {session.target.kind} target "
                      f"at {session.target.endpoint}")
    try:
        report = session.machine.rollout(model, version)
    except RolloutFailed as exc:
        path.write_text(json.dumps(exc.report.to_json(), indent=2, default=str))
        raise RolloutError(f"{exc} (report with runtime logs: {path})") from None
    finally:
        session.close()
    path.write_text(json.dumps(report.to_json(), indent=2, default=str))
    ctx.reporter.note(f"{report.action}: {model} v{version} is '{cfg.rollout.stable_label}' at "
                      f"{session.target.endpoint} (timings {report.timings_s})")
    if report.cleanup_pending:
        ctx.reporter.note(f"warning: promoted, clean-up pending ({report.cleanup_pending}); the next "
                          "rollout, rollback or status finishes it")
    return RolloutOutput(target=session.target.kind, endpoint=session.target.endpoint, model_name=model,
                         version=version, previous=report.previous, action=report.action,
                         stable_label=cfg.rollout.stable_label, served=report.served,
                         timings_s=report.timings_s, report=path, cleanup_pending=report.cleanup_pending,
                         serving_check=checked)


def run_swarm(ctx: StageContext, model: str, version: int, golden: Path) -> RolloutOutput:
    """The swarm target: the service spec is pinned to the pushed version; a one-replica canary
    service is checked with the export's golden set first, then swarm rolls the replicas."""
    from pipeline.rollout.swarm_engine import SwarmRolloutFailed
    from pipeline.rollout.swarm_run import rollout_swarm
    from pipeline.targets.swarm import SwarmTarget

    cfg = ctx.config
    target = SwarmTarget(cfg.rollout)
    path = ctx.workdir / "rollout.json"
    ctx.reporter.note(f"rolling out {model} v{version} to swarm service {target.service(model)} "
                      f"({cfg.rollout.replicas if cfg.rollout.swarm_mode == 'replicated' else 'one per node'} "
                      f"replica(s)) at {target.endpoint}")
    try:
        report = rollout_swarm(cfg, model, version, verify=True, golden=golden, target=target)
    except SwarmRolloutFailed as exc:
        path.write_text(json.dumps(exc.report.to_json(), indent=2, default=str))
        raise RolloutError(f"{exc} (report: {path})") from None
    path.write_text(json.dumps(report.to_json(), indent=2, default=str))
    stable = cfg.rollout.stable_label
    ctx.reporter.note(f"{report.action}: {model} v{version} is '{stable}' on {len(report.replicas)} replica(s) "
                      f"in {report.duration_s:.1f} s")
    if report.cleanup_pending:
        ctx.reporter.note(f"warning: promoted, clean-up pending: {report.cleanup_pending}")
    timings = {"total": report.duration_s}
    if report.canary:
        timings["canary"] = report.canary.duration_s
    return RolloutOutput(target="swarm", endpoint=target.endpoint, model_name=model, version=version,
                         previous=report.previous, action=report.action, stable_label=stable,
                         served={"model": model, "versions": sorted({r["version"] for r in report.replicas}),
                                 "labels": {stable: version}, "replicas": len(report.replicas)},
                         timings_s=timings, report=path, cleanup_pending=report.cleanup_pending)
