"""gate stage: the transferred model must clear the configured quality bar before export.

Scores the model on the held-out split (accuracy, recall per class, confusion matrix),
compares it with the from-scratch baseline and — when `gate.max_drop_vs_serving` is
set — with the version currently labelled `stable` on the serving host, asked over
gRPC with the same held-out examples. A failed check stops the run here, before
anything is exported or published (GateError, exit code 9); `gate.enforce = false`
lets it through and the export records the override in the version's manifest.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipeline.config import DeployConfig
from pipeline.errors import GateError
from pipeline.model.heldout_file import open_heldout
from pipeline.model.quality import Evaluation, EvaluationError, evaluate, failure_line, judge
from pipeline.run import StageContext
from pipeline.stages.results import GateOutput, TransferOutput

PREDICT_BATCH = 64


def candidate_probabilities(ctx: StageContext, transfer: TransferOutput, x: Any) -> np.ndarray:
    """The transferred model's outputs over `x` (an array, or the held-out file's rows read
    batch by batch: the held-out set is never all in memory)."""
    model = ctx.transferred_model
    if model is None:
        import keras

        import pipeline.model.preprocess_layer  # noqa: F401 - registers the PixelPreprocess layer

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
        raise GateError(f"quality gate: could not evaluate the served {model} v{version} at "
                        f"{target.endpoint}: {exc}") from None
    return probabilities, version, None


def run(ctx: StageContext) -> GateOutput:
    cfg = ctx.config.gate
    transfer = ctx.output(TransferOutput)
    x, y = open_heldout(transfer.heldout)
    try:
        candidate = evaluate(y, candidate_probabilities(ctx, transfer, x), transfer.classes)
    except EvaluationError as exc:
        raise GateError(f"quality gate: the transferred model cannot be scored: {exc}") from None
    serving: Evaluation | None = None
    version, note = None, None
    if cfg.max_drop_vs_serving is not None:
        probs, version, note = served_stable(ctx.config, x)
        if probs is not None:
            try:
                serving = evaluate(y, probs, transfer.classes)
            except EvaluationError as exc:
                raise GateError(f"quality gate: the served stable v{version} cannot be scored on the "
                                f"held-out set: {exc}") from None
            ctx.reporter.note(f"served stable v{version}: held-out accuracy {serving.accuracy:.3f}")
        else:
            ctx.reporter.note(f"gate: no comparison with serving — {note}")
    checks = judge(candidate, baseline_accuracy=transfer.baseline_accuracy, serving=serving,
                   min_accuracy=cfg.min_accuracy, min_class_recall=cfg.min_class_recall,
                   min_gain_over_baseline=cfg.min_gain_over_baseline,
                   max_drop_vs_serving=cfg.max_drop_vs_serving)
    failed = failure_line(checks)
    report: dict[str, Any] = {
        "passed": failed is None, "enforced": cfg.enforce, "checks": [c.to_json() for c in checks],
        "candidate": candidate.to_json(), "baseline_accuracy": transfer.baseline_accuracy,
        "serving": None if serving is None else {"version": version, **serving.to_json()},
        "serving_note": note, "classes": transfer.classes,
    }
    from pipeline.model.plots import plot_confusion

    report["confusion_png"] = str(plot_confusion(candidate.confusion, transfer.classes,
                                                 ctx.workdir.resolve() / "confusion.png", "held-out confusion matrix"))
    path = ctx.workdir / "gate_report.json"
    path.write_text(json.dumps(report, indent=2))
    output = GateOutput(passed=failed is None, enforced=cfg.enforce, accuracy=candidate.accuracy,
                        serving_accuracy=None if serving is None else serving.accuracy,
                        serving_version=version, serving_note=note,
                        checks=[c.to_json() for c in checks], report=path.resolve())
    if failed is not None and cfg.enforce:
        error = GateError(failed)
        error.details = {"gate": report}
        raise error
    if failed is not None:
        ctx.reporter.note(f"{failed} — published anyway (gate.enforce = false; recorded in the manifest)")
    else:
        ctx.reporter.note(f"quality gate passed ({len(checks)} check(s))")
    return output
