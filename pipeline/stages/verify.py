"""verify stage: the served model must answer the export's golden set like the local model did.

Reads `[verify]` from the config and the export stage's outputs (model name,
version, golden path). Writes the full report to `<run workdir>/verify.json`
even on failure, then fails with one line naming the worst output and index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import VerifyError
from pipeline.run import StageContext
from pipeline.verify.compare import Tolerance
from pipeline.verify.golden import load_golden
from pipeline.verify.runner import Target, verify_served


def target_from(cfg: Any, model: str, export_version: int | None) -> Target:
    """Label wins over version; with neither, verify the version the export just wrote."""
    if cfg.label is not None and cfg.version is not None:
        raise VerifyError("verify: set verify.label or verify.version, not both")
    version = None if cfg.label is not None else (cfg.version or export_version)
    return Target(cfg.target, model, version, cfg.label, cfg.signature, cfg.ca_cert,
                  cfg.client_cert, cfg.client_key, cfg.server_name)


def after_rollout(cfg: Any, rollout: dict[str, Any] | None) -> Any:
    """After a rollout in this run, check its endpoint under the stable label (unless set explicitly)."""
    if not rollout or cfg.label is not None or cfg.version is not None:
        return cfg
    update: dict[str, Any] = {"label": rollout.get("stable_label", "stable")}
    if "target" not in cfg.model_fields_set and rollout.get("endpoint"):
        update["target"] = rollout["endpoint"]
    return cfg.model_copy(update=update)


def run(ctx: StageContext) -> dict[str, Any]:
    export = ctx.outputs("export")
    rolled = ctx.record.stages.get("rollout")
    rollout = rolled.outputs if rolled is not None and rolled.status == "ok" else None
    cfg = after_rollout(ctx.config.verify, rollout)
    target = target_from(cfg, export["model_name"], export.get("version"))
    golden = load_golden(Path(export["golden"]))
    tol = Tolerance(cfg.atol, cfg.rtol, cfg.min_agreement)
    report = verify_served(target, golden, tol, deadline_s=cfg.deadline_s, batch_size=cfg.batch_size)
    path = ctx.workdir / "verify.json"
    path.write_text(json.dumps(report, indent=2))
    if report["ok"] and rollout and target.label and report["served_versions"] not in (
            [], [rollout["version"]]):
        report["ok"] = False
        report["reason"] = (f"label {target.label!r} answered with version(s) {report['served_versions']}, "
                            f"expected {rollout['version']}")
    if not report["ok"]:
        raise VerifyError(f"served {target.describe()} does not match the golden set: "
                          f"{report['reason']} (report: {path})")
    ctx.reporter.note(f"verified {target.describe()}: max abs diff {report['max_abs_diff']:.2g}, "
                      f"p50 {report['latency_ms'].get('p50')} ms over {report['requests']} requests")
    return {"report": str(path), "ok": True, "max_abs_diff": report["max_abs_diff"],
            "agreement": report["agreement"], "latency_ms": report["latency_ms"],
            "served_versions": report["served_versions"]}
