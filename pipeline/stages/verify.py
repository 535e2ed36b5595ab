"""verify stage: the served model must answer the export's golden set like the local model did.

Reads `[verify]` from the config and the export's result (model name, version, golden
path). The full report goes to `<run workdir>/verify.json` — written once the verdict
is final, so the file an error points to says what the error says — then a failure is
one line naming the worst output and index.
"""

from __future__ import annotations

import json

from pipeline.config import DeployConfig
from pipeline.errors import VerifyError
from pipeline.results import ExportOutput, RolloutOutput, VerifyOutput
from pipeline.run import StageContext
from pipeline.verify.compare import Tolerance
from pipeline.verify.golden import load_golden
from pipeline.verify.runner import Endpoint, ServedModel, verify_endpoint, verify_served


def what_to_verify(config: DeployConfig, export: ExportOutput,
                   rollout: RolloutOutput | None) -> tuple[Endpoint, ServedModel]:
    """Pure: where and what verify asks.

    An explicit `verify.label` or `verify.version` wins. Otherwise, after a rollout in
    this run, the rollout's endpoint (unless `verify.endpoint` is set) under its stable
    label; with neither, the version the export just wrote.
    """
    cfg = config.verify
    if cfg.label is not None and cfg.version is not None:
        raise VerifyError("verify: set verify.label or verify.version, not both")
    address = None
    if cfg.label is not None or cfg.version is not None:
        label, version = cfg.label, cfg.version
    elif rollout is not None:
        label, version = rollout.stable_label, None
        if cfg.endpoint is None:
            address = rollout.endpoint
    else:
        label, version = None, export.version
    return verify_endpoint(cfg, config.rollout, address), ServedModel(export.model_name, version, label, cfg.signature)


def served_versions_problem(report: dict[str, object], wanted: ServedModel,
                            rollout: RolloutOutput | None) -> str | None:
    """After a rollout, the stable label must answer with the version just rolled out (pure)."""
    served = report.get("served_versions")
    if rollout is None or wanted.label is None or served in ([], [rollout.version]):
        return None
    return f"label {wanted.label!r} answered with version(s) {served}, expected {rollout.version}"


def run(ctx: StageContext) -> VerifyOutput:
    export = ctx.output(ExportOutput)
    rollout = ctx.record.find(RolloutOutput)
    cfg = ctx.config.verify
    endpoint, wanted = what_to_verify(ctx.config, export, rollout)
    golden = load_golden(export.golden)
    tol = Tolerance.of(cfg)
    report = verify_served(endpoint, wanted, golden, tol, deadline_s=cfg.deadline_s,
                           batch_size=cfg.batch_size)
    problem = served_versions_problem(report, wanted, rollout) if report["ok"] else None
    if problem is not None:
        report["ok"], report["reason"] = False, problem
    path = ctx.workdir / "verify.json"
    path.write_text(json.dumps(report, indent=2))
    where = f"{wanted.describe()} at {endpoint.address}"
    if not report["ok"]:
        raise VerifyError(f"served {where} does not match the golden set: {report['reason']} "
                          f"(report: {path})")
    ctx.reporter.note(f"verified {where}: max abs diff {report['max_abs_diff']:.2g}, "
                      f"p50 {report['latency_ms'].get('p50')} ms over {report['requests']} requests")
    return VerifyOutput(report=path, max_abs_diff=report["max_abs_diff"], agreement=report["agreement"],
                        latency_ms=report["latency_ms"], served_versions=report["served_versions"])
