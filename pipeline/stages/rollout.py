"""rollout stage: the pushed version goes live on the serving target (canary -> verify -> promote).

The store is checked first: an unreachable store or an uncommitted version fails here,
before the serving host is touched. The full report (steps, timings, runtime logs on
failure) is written to `<run workdir>/rollout.json` either way.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import RolloutError, StorageError
from pipeline.rollout.machine import RolloutFailed
from pipeline.rollout.session import committed_versions, open_session
from pipeline.run import StageContext
from pipeline.stages.results import ExportOutput, PushOutput, RolloutOutput
from pipeline.storage import Store


def run(ctx: StageContext) -> RolloutOutput:
    cfg = ctx.config
    push = ctx.output(PushOutput)
    export = ctx.output(ExportOutput)
    model, version = push.model_name, push.version
    if cfg.rollout.target == "swarm":
        return run_swarm(ctx, model, version, export.golden)
    store: Store | None = None
    if cfg.rollout.model_base_path is None:
        store, committed = committed_versions(cfg, model)
        if version not in committed:
            raise StorageError(f"{model} version {version} is not committed in {store.uri}; "
                               "run the push stage first")
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
                         timings_s=report.timings_s, report=path, cleanup_pending=report.cleanup_pending)


def run_swarm(ctx: StageContext, model: str, version: int, golden: Path) -> RolloutOutput:
    """The swarm target: the service spec is pinned to the pushed version; a one-replica canary
    service is checked with the export's golden set first, then swarm rolls the replicas."""
    from pipeline.targets.swarm import SwarmRolloutFailed, SwarmTarget
    from pipeline.targets.swarm_run import rollout_swarm

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
    timings = {"total": report.duration_s}
    if report.canary:
        timings["canary"] = report.canary["duration_s"]
    return RolloutOutput(target="swarm", endpoint=target.endpoint, model_name=model, version=version,
                         previous=report.previous, action=report.action, stable_label=stable,
                         served={"model": model, "versions": sorted({r["version"] for r in report.replicas}),
                                 "labels": {stable: version}, "replicas": len(report.replicas)},
                         timings_s=timings, report=path)
