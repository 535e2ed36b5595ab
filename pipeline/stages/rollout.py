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
from pipeline.rollout.engines import EngineFailed, open_engine
from pipeline.rollout.session import committed_versions
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
    store: Store | None = None
    if cfg.rollout.model_base_path is None:
        store, committed = committed_versions(cfg, model)
        if version not in committed:
            raise StorageError(f"{model} version {version} is not committed in {store.uri}; "
                               "run the push stage first")
    checked = owed_comparison(cfg, ctx.record, ctx.reporter.note)  # before the serving host changes
    engine = open_engine(cfg, last=export)
    path = ctx.workdir / "rollout.json"
    ctx.reporter.note(engine.describe_rollout(model, version))
    try:
        result = engine.rollout(model, version, store=store, golden=export.golden)
    except EngineFailed as exc:
        path.write_text(json.dumps(exc.report, indent=2, default=str))
        raise RolloutError(f"{exc} ({exc.report_hint}: {path})") from None
    path.write_text(json.dumps(result.report, indent=2, default=str))
    for line in result.stage_notes:
        ctx.reporter.note(line)
    return RolloutOutput(target=engine.kind, endpoint=engine.endpoint, model_name=model,
                         version=version, previous=result.previous, action=result.action,
                         stable_label=cfg.rollout.stable_label, served=result.served,
                         timings_s=result.timings_s, report=path, cleanup_pending=result.cleanup_pending,
                         serving_check=checked)
