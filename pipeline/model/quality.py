"""The quality gate's arithmetic: held-out metrics and the checks a candidate must pass.

Pure numpy, no TensorFlow: the gate stage feeds it predictions (from the Keras model,
or from the served `stable` version over gRPC) and gets back metrics and verdicts.
Every check fails closed: a NaN metric, an empty set or a check that could not be
computed is a failure, never a pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


class EvaluationError(ValueError):
    """Predictions that cannot be scored (empty, non-finite, wrong shape)."""


@dataclass(frozen=True)
class Evaluation:
    """Held-out metrics of one model."""

    accuracy: float
    per_class_recall: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    examples: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> Evaluation:
    """Accuracy, recall per class and the confusion matrix of argmax predictions."""
    probs = np.asarray(probabilities)
    labels = np.asarray(y_true).astype(np.int64)
    k = len(class_names)
    if len(labels) == 0:
        raise EvaluationError("no held-out examples to evaluate")
    if probs.ndim != 2 or probs.shape[0] != len(labels) or probs.shape[1] != k:
        raise EvaluationError(f"predictions of shape {probs.shape} do not match {len(labels)} examples "
                              f"x {k} classes")
    if not np.isfinite(probs).all():
        raise EvaluationError(f"{int((~np.isfinite(probs)).sum())} non-finite prediction value(s)")
    if labels.min() < 0 or labels.max() >= k:
        raise EvaluationError(f"labels outside 0..{k - 1}")
    predicted = probs.argmax(axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    support = confusion.sum(axis=1)
    recall = {name: float(confusion[i, i] / support[i]) if support[i] else math.nan
              for i, name in enumerate(class_names)}
    return Evaluation(float(np.trace(confusion) / len(labels)), recall, confusion.tolist(), int(len(labels)))


@dataclass(frozen=True)
class Check:
    """One gate rule applied: `value` against `threshold`, passed or not, and why."""

    name: str
    value: float | None
    threshold: float
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def at_least(name: str, value: float | None, threshold: float, what: str) -> Check:
    """`value >= threshold`, where a missing or NaN value fails (fail closed)."""
    if value is None or not math.isfinite(value):
        return Check(name, value, threshold, False, f"{what} could not be measured ({value})")
    ok = value >= threshold
    return Check(name, value, threshold, ok, f"{what} {value:.3f} {'>=' if ok else '<'} {name} {threshold:g}")


def broken_stable_check(why: str, min_accuracy: float | None, max_drop_vs_serving: float) -> Check:
    """max_drop_vs_serving when the served stable answers but cannot be scored (NaN outputs,
    errors): it is no bar, and refusing every candidate would keep the broken version
    serving. The candidate's absolute check decides — and without one, nothing does, so
    the gate fails closed and says how to replace the broken stable (pure)."""
    if min_accuracy is None:
        return Check("max_drop_vs_serving", None, max_drop_vs_serving, False,
                     f"{why}; with no gate.min_accuracy nothing can judge the candidate on its own: set "
                     "gate.min_accuracy (or unset gate.max_drop_vs_serving) to replace the broken stable")
    return Check("max_drop_vs_serving", None, max_drop_vs_serving, True,
                 f"{why}: no bar to compare with; the absolute check (min_accuracy {min_accuracy:g}) decides")


def judge(candidate: Evaluation, *, baseline_accuracy: float | None, serving: Evaluation | None,
          min_accuracy: float | None, min_class_recall: float | None,
          min_gain_over_baseline: float | None, max_drop_vs_serving: float | None,
          serving_broken: str | None = None) -> list[Check]:
    """The configured checks (unset thresholds are not checked), in a fixed order."""
    checks: list[Check] = []
    if min_accuracy is not None:
        checks.append(at_least("min_accuracy", candidate.accuracy, min_accuracy, "held-out accuracy"))
    if min_class_recall is not None:
        for name, recall in candidate.per_class_recall.items():
            check = at_least("min_class_recall", recall, min_class_recall, f"recall of class {name!r}")
            checks.append(check)
    if min_gain_over_baseline is not None:
        gain = None if baseline_accuracy is None else candidate.accuracy - baseline_accuracy
        check = at_least("min_gain_over_baseline", gain, min_gain_over_baseline,
                         "accuracy gain over the from-scratch baseline")
        if baseline_accuracy is None:
            check = Check(check.name, None, min_gain_over_baseline, False,
                          "no from-scratch baseline was trained (transfer.baseline = false)")
        checks.append(check)
    if max_drop_vs_serving is not None and serving is not None:
        checks.append(serving_check(candidate.accuracy, serving, max_drop_vs_serving))
    elif max_drop_vs_serving is not None and serving_broken is not None:
        checks.append(broken_stable_check(serving_broken, min_accuracy, max_drop_vs_serving))
    return checks


def serving_check(candidate_accuracy: float, serving: Evaluation, max_drop_vs_serving: float) -> Check:
    """max_drop_vs_serving: the candidate may be at most this much less accurate than the served
    stable version on the same held-out set (a NaN on either side fails)."""
    change = candidate_accuracy - serving.accuracy
    check = at_least("max_drop_vs_serving", change, -max_drop_vs_serving,
                     f"accuracy change vs the served stable ({serving.accuracy:.3f})")
    return Check(check.name, check.value, max_drop_vs_serving, check.passed, check.detail)


def failure_line(checks: list[Check]) -> str | None:
    """One line naming the first failed check (and how many more), or None when all passed."""
    failed = [c for c in checks if not c.passed]
    if not failed:
        return None
    more = f" (and {len(failed) - 1} more failed check(s))" if len(failed) > 1 else ""
    return f"quality gate failed: {failed[0].detail}{more}"
