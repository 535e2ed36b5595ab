"""gate stage: the transferred model must clear the configured quality bar before export.

Scores the model on the held-out split (accuracy, recall per class, confusion matrix),
compares it with the from-scratch baseline and — when `gate.max_drop_vs_serving` is
set — with the version currently labelled `stable` on the serving host, asked over
gRPC with the same held-out examples. A failed check stops the run here, before
anything is exported or published (GateError, exit code 9); `gate.enforce = false`
lets it through and the export records the override in the version's manifest.

A run that stops before rollout (`deploy --until push`, publish only) defers the
comparison with serving instead of running it: publishing is not promotion, and the
serving host may not even be reachable from where versions are published. The gate's
output (and the version's manifest) records the deferral; the rollout stage — and
`tfrollout rollout` — runs the same comparison (`run_deferred_comparison`) before it
delivers or promotes anything, and fails with exit code 9 unless serving positively
passes it or serves no stable version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import DeployConfig
from pipeline.errors import GateError, TfRolloutError
from pipeline.model.heldout_file import open_heldout
from pipeline.model.quality import (
    Evaluation,
    EvaluationError,
    broken_stable_check,
    evaluate,
    failure_line,
    judge,
    serving_check,
)
from pipeline.results import DeferredComparison, GateOutput, TransferOutput
from pipeline.run import StageContext, reaches
from pipeline.verify.promote_gate import BROKEN_STABLE_CODES

PREDICT_BATCH = 64


def candidate_probabilities(ctx: StageContext, transfer: TransferOutput, x: Any) -> np.ndarray:
    """The transferred model's outputs over `x` (an array, or the held-out file's rows read
    batch by batch: the held-out set is never all in memory)."""
    model = ctx.transferred_model
    if model is None:
        import keras

        import pipeline.model.preprocess_layer  # noqa: F401 - registers the PixelPreprocess layer
        import pipeline.model.saved_model_base  # noqa: F401 - registers the SignatureFeatures layer

        model = keras.models.load_model(transfer.model_path, compile=False)
        ctx.transferred_model = model
    parts = [np.asarray(model(x[start:start + PREDICT_BATCH], training=False))
             for start in range(0, len(x), PREDICT_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def served_stable(cfg: DeployConfig, x: Any) -> tuple[np.ndarray | None, int | None, str | None]:
    """(probabilities, version, None) from the served stable version, or (None, None, why skipped).

    Skipped only when nothing is served: no runtime, or no stable label for this model.
    A runtime that serves a stable version but cannot answer raises: fail closed.
    """
    from pipeline.rollout.host import served_from_config
    from pipeline.targets import open_target
    from pipeline.verify.promote_gate import score_label
    from serving.client import ClientError, PredictionClient

    model = cfg.export.model_name
    stable = cfg.rollout.stable_label
    target = open_target(cfg.rollout, cfg.run.workdir)
    served = served_from_config(target.read_config(), model)
    if served is None or stable not in served.labels:
        return None, None, f"nothing is served yet (no {stable!r} version of {model!r} on the {target.kind} host)"
    if not target.running():
        return None, None, f"the {target.kind} runtime is not running"
    version = served.labels[stable]
    try:
        with PredictionClient(target.endpoint, deadline=cfg.gate.serving_deadline_s,
                              admin_token=target.admin_token()) as client:
            signature = client.signature(model, label=stable)
            if len(signature.inputs) != 1 or len(signature.outputs) != 1:
                raise GateError(f"quality gate: the served {model} v{version} has inputs "
                                f"{sorted(signature.inputs)} / outputs {sorted(signature.outputs)}; "
                                "cannot compare it with a one-input, one-output candidate")
            (input_name,) = signature.inputs
            probabilities = score_label(client, model, stable, "serving_default", {input_name: x}, PREDICT_BATCH)
    except ClientError as exc:
        if exc.code in BROKEN_STABLE_CODES:  # it answered: broken or incomparable, not unreachable
            raise BrokenStable(f"the served stable v{version} answers {exc.code}: {exc}", version) from None
        raise GateError(f"quality gate: could not evaluate the served {model} v{version} at "
                        f"{target.endpoint}: {exc}") from None
    return probabilities, version, None


class BrokenStable(Exception):
    """The served stable answered, but with nothing that can be scored."""

    def __init__(self, why: str, version: int) -> None:
        super().__init__(why)
        self.version = version


@dataclass(frozen=True)
class ServingComparison:
    """The served stable version scored on the held-out set, or why there was nothing to score."""

    serving: Evaluation | None
    version: int | None
    note: str | None  # set when nothing is served (no comparison; not a failure)
    broken: str | None = None  # the stable answered but cannot be scored: the absolute checks decide


def compare_with_serving(cfg: DeployConfig, x: Any, y: np.ndarray, classes: list[str]) -> ServingComparison:
    """Score the served stable version on the held-out rows (the gate's comparison, wherever it runs).

    A stable that answers but cannot be scored (non-finite outputs, an error status) comes
    back as `broken` (the absolute checks decide); a serving host that cannot be read or
    reached raises (GateError, or the target's own error): fail closed."""
    try:
        probs, version, note = served_stable(cfg, x)
    except BrokenStable as broken:
        return ServingComparison(None, broken.version, None, str(broken))
    if probs is None:
        return ServingComparison(None, None, note)
    try:
        serving = evaluate(y, probs, classes)
    except EvaluationError as exc:  # e.g. NaN outputs: a broken stable must not block its own fix
        return ServingComparison(None, version, None,
                                 f"the served stable v{version} cannot be scored on the held-out set: {exc}")
    return ServingComparison(serving, version, None)


DEFERRED = "deferred: the run stops before rollout"


def serving_deferral(max_drop_vs_serving: float | None, until_stage: str | None) -> DeferredComparison | None:
    """The comparison with serving left to the rollout stage, or None: the gate runs it now (pure).

    Deferred only when there is one to run and this invocation stops before rollout; a run
    that goes on to rollout compares here, and an unreachable serving host fails the gate."""
    if max_drop_vs_serving is None or reaches(until_stage, "rollout"):
        return None
    return DeferredComparison(
        reason=f"{DEFERRED} (--until {until_stage}); the rollout stage compares the candidate with the "
               "served stable version before it delivers or promotes anything",
        max_drop_vs_serving=max_drop_vs_serving)


def run_deferred_comparison(cfg: DeployConfig, gate: GateOutput, transfer: TransferOutput,
                            note: Callable[[str], None]) -> dict[str, Any] | None:
    """The comparison with serving `gate` deferred, run now, before a rollout delivers or promotes.

    None when nothing was deferred. Passes (returning its report) only when the served stable
    version was scored and the candidate is within the bar, or when no stable version is served;
    anything else — worse than allowed, a serving host that cannot be read or scored, a held-out
    set that is gone — is a GateError (exit code 9). `gate.enforce = false` does not apply: an
    override is recorded in the version's manifest at export, which a later rollout cannot amend.
    A stricter `gate.max_drop_vs_serving` in the rollout's config applies instead of the gate's."""
    deferred = gate.serving_deferred
    if deferred is None:
        return None
    limit = deferred.max_drop_vs_serving
    if cfg.gate.max_drop_vs_serving is not None:
        limit = min(limit, cfg.gate.max_drop_vs_serving)
    what = "quality gate: the comparison with serving deferred at the gate"
    refused = "nothing is delivered or promoted"
    try:
        x, y = open_heldout(transfer.heldout)
    except (OSError, ValueError) as exc:
        raise GateError(f"{what} cannot run: the held-out set {transfer.heldout} is unreadable ({exc}); "
                        f"{refused}") from None
    try:
        comparison = compare_with_serving(cfg, x, y, transfer.classes)
    except GateError as exc:
        raise GateError(f"{what} failed: {str(exc).removeprefix('quality gate: ')}; {refused}") from None
    except TfRolloutError as exc:
        raise GateError(f"{what} could not read the serving host: {exc}; {refused}") from None
    except Exception as exc:  # noqa: BLE001 - a comparison that could not run is a failure
        raise GateError(f"{what} could not run: {type(exc).__name__}: {exc}; {refused}") from None
    report: dict[str, Any] = {"ran": True, "max_drop_vs_serving": limit, "candidate_accuracy": gate.accuracy,
                              "serving_version": comparison.version, "serving_accuracy": None,
                              "note": comparison.note, "check": None, "passed": True}
    if comparison.serving is None and comparison.broken is None:
        note(f"deferred comparison with serving: none to run — {comparison.note}")
        return report
    if comparison.serving is None:
        check = broken_stable_check(comparison.broken or "", cfg.gate.min_accuracy, limit)
    else:
        check = serving_check(gate.accuracy, comparison.serving, limit)
        report.update(serving_accuracy=comparison.serving.accuracy)
    report.update(check=check.to_json(), passed=check.passed, broken=comparison.broken)
    if not check.passed:
        error = GateError(f"quality gate failed: {check.detail} (the comparison with serving deferred at the "
                          f"gate, run before rollout); {refused}")
        error.details = {"serving_check": report}
        raise error
    if comparison.serving is None:
        note(f"deferred comparison with serving: {check.detail}")
        return report
    note(f"deferred comparison with serving passed: held-out accuracy {gate.accuracy:.3f} vs the served "
         f"stable v{comparison.version}'s {comparison.serving.accuracy:.3f} (max_drop_vs_serving {limit:g})")
    return report


def run(ctx: StageContext) -> GateOutput:
    cfg = ctx.config.gate
    transfer = ctx.output(TransferOutput)
    x, y = open_heldout(transfer.heldout)
    try:
        candidate = evaluate(y, candidate_probabilities(ctx, transfer, x), transfer.classes)
    except EvaluationError as exc:
        raise GateError(f"quality gate: the transferred model cannot be scored: {exc}") from None
    serving: Evaluation | None = None
    version, note, broken = None, None, None
    deferred = serving_deferral(cfg.max_drop_vs_serving, ctx.until_stage)
    if deferred is not None:
        note = deferred.reason
        ctx.reporter.note(f"gate: no comparison with serving now — {note}")
    elif cfg.max_drop_vs_serving is not None:
        comparison = compare_with_serving(ctx.config, x, y, transfer.classes)
        serving, version, note, broken = comparison.serving, comparison.version, comparison.note, comparison.broken
        if serving is not None:
            ctx.reporter.note(f"served stable v{version}: held-out accuracy {serving.accuracy:.3f}")
        elif broken is not None:
            ctx.reporter.note(f"warning: {broken}")
        else:
            ctx.reporter.note(f"gate: no comparison with serving — {note}")
    checks = judge(candidate, baseline_accuracy=transfer.baseline_accuracy, serving=serving,
                   min_accuracy=cfg.min_accuracy, min_class_recall=cfg.min_class_recall,
                   min_gain_over_baseline=cfg.min_gain_over_baseline,
                   max_drop_vs_serving=cfg.max_drop_vs_serving, serving_broken=broken)
    failed = failure_line(checks)
    report: dict[str, Any] = {
        "passed": failed is None, "enforced": cfg.enforce, "checks": [c.to_json() for c in checks],
        "candidate": candidate.to_json(), "baseline_accuracy": transfer.baseline_accuracy,
        "serving": None if serving is None else {"version": version, **serving.to_json()},
        "serving_note": note, "serving_broken": broken, "classes": transfer.classes,
        "serving_deferred": None if deferred is None else deferred.model_dump(),
    }
    from pipeline.model.plots import plot_confusion

    report["confusion_png"] = str(plot_confusion(candidate.confusion, transfer.classes,
                                                 ctx.workdir.resolve() / "confusion.png", "held-out confusion matrix"))
    path = ctx.workdir / "gate_report.json"
    path.write_text(json.dumps(report, indent=2))
    output = GateOutput(passed=failed is None, enforced=cfg.enforce, accuracy=candidate.accuracy,
                        serving_accuracy=None if serving is None else serving.accuracy,
                        serving_version=version, serving_note=note,
                        checks=[c.to_json() for c in checks], report=path.resolve(), serving_deferred=deferred)
    if failed is not None and cfg.enforce:
        error = GateError(failed)
        error.details = {"gate": report}
        raise error
    if failed is not None:
        ctx.reporter.note(f"{failed} — published anyway (gate.enforce = false; recorded in the manifest)")
    else:
        owed = "; the comparison with serving is owed by the rollout" if deferred is not None else ""
        ctx.reporter.note(f"quality gate passed ({len(checks)} check(s){owed})")
    return output
