"""rollout stage: the pushed version goes live on the serving target (canary -> verify -> promote).

Reads the push (and export) outputs. The store is checked first: an unreachable
store or an uncommitted version fails here, before the serving host is touched.
The full report (steps, timings, runtime logs on failure) is written to
`<run workdir>/rollout.json` either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import RolloutError, StorageError
from pipeline.run import StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    from pipeline.rollout.machine import RolloutFailed
    from pipeline.rollout.session import committed_versions, golden_verifier, open_session

    cfg = ctx.config
    push = ctx.outputs("push")
    export = ctx.outputs("export")
    model, version = str(push["model_name"]), int(push["version"])
    store = None
    if cfg.rollout.model_base_path is None:
        store, committed = committed_versions(cfg, model)
        if version not in committed:
            raise StorageError(f"{model} version {version} is not committed in {store.uri}; "
                               "run the push stage first")
    session = open_session(cfg, store=store)
    if cfg.rollout.verify_canary:
        session.machine.verifier = golden_verifier(cfg, session.target.endpoint, model, Path(export["golden"]))
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
    return {"target": session.target.kind, "endpoint": session.target.endpoint, "model_name": model,
            "version": version, "previous": report.previous, "action": report.action,
            "stable_label": cfg.rollout.stable_label, "served": report.served,
            "timings_s": report.timings_s, "report": str(path)}
