"""The quality gate once more, on the served canary, before it is promoted.

The gate stage judged the Keras model before export; what gets promoted is what
the runtime actually answers (its preprocessing, quantization, TF build). So the
canary label is scored on the golden set's labelled examples and compared with the
`stable` label on the same examples: `gate.min_accuracy` and
`gate.max_drop_vs_serving` apply again. Pure verdict here; the I/O is `score_label`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import GateConfig

# gRPC codes with which a served stable *answered* (it is broken or incomparable), as opposed to
# not being reachable or not letting us ask (UNAVAILABLE, DEADLINE_EXCEEDED, auth): those fail closed
BROKEN_STABLE_CODES = frozenset({"INTERNAL", "UNKNOWN", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "DATA_LOSS"})


@dataclass(frozen=True)
class PromoteVerdict:
    ok: bool
    reason: str
    report: dict[str, Any]


def gate_applies(cfg: GateConfig) -> bool:
    return cfg.min_accuracy is not None or cfg.max_drop_vs_serving is not None


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy; NaN (a failure downstream) for no examples, bad shapes or non-finite output."""
    probs = np.asarray(probabilities)
    if len(labels) == 0 or probs.ndim != 2 or probs.shape[0] != len(labels) or not np.isfinite(probs).all():
        return math.nan
    return float(np.mean(probs.argmax(axis=1) == labels))


def promote_verdict(cfg: GateConfig, canary: float, stable: float | None, examples: int) -> PromoteVerdict:
    """Apply min_accuracy and max_drop_vs_serving to the served canary (fail closed)."""
    failures = []
    if cfg.min_accuracy is not None and not canary >= cfg.min_accuracy:  # NaN fails
        failures.append(f"canary accuracy {canary:.3f} < min_accuracy {cfg.min_accuracy:g}")
    if cfg.max_drop_vs_serving is not None:
        if stable is None or not math.isfinite(stable):
            # it answered, but nothing scorable (NaN outputs, errors): no bar, and refusing would keep
            # the broken version serving; min_accuracy decides, and without one nothing does (fail closed)
            if cfg.min_accuracy is None:
                failures.append("the stable version could not be scored and no gate.min_accuracy is set to "
                                "judge the canary on its own (set one to replace a broken stable)")
        elif not stable - canary <= cfg.max_drop_vs_serving:
            failures.append(f"canary accuracy {canary:.3f} is {stable - canary:.3f} below stable's "
                            f"{stable:.3f} (> max_drop_vs_serving {cfg.max_drop_vs_serving:g})")
    report = {"canary_accuracy": canary, "stable_accuracy": stable, "examples": examples,
              "passed": not failures, "enforced": cfg.enforce}
    if not failures:
        return PromoteVerdict(True, "", report)
    reason = f"quality gate before promote: {'; '.join(failures)} on {examples} golden examples"
    if not cfg.enforce:
        report["overridden"] = True
        return PromoteVerdict(True, reason + " (gate.enforce = false: promoted anyway)", report)
    return PromoteVerdict(False, reason, report)


def score_label(client: Any, model: str, label: str, signature: str, inputs: dict[str, np.ndarray],
                batch: int = 64) -> np.ndarray:
    """The served `label`'s single output over `inputs`, in bounded batches."""
    n = int(next(iter(inputs.values())).shape[0])
    parts = []
    for start in range(0, n, batch):
        result = client.predict(model, {k: v[start:start + batch] for k, v in inputs.items()}, label=label,
                                signature=signature)
        if len(result) != 1:
            raise ValueError(f"the served {model} ({label}) has outputs {sorted(result)}; expected one")
        parts.append(next(iter(result.values())))
    return np.concatenate(parts)
