"""Pure comparison of served outputs against golden outputs: tolerances, top-1, worst element.

Fails closed: a NaN or an infinity in a served output is a mismatch, whatever the
golden set holds (a hand-pushed golden set may hold the model's own NaNs), unless the
user opted that output in (`verify.allow_non_finite`); then it passes only where the
golden output has the same non-finite value at the same place. A row with a NaN never
counts as top-1 agreement, and a comparison with nothing to compare (no outputs, or no
elements) is a failure, never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Element passes when |served - expected| <= atol + rtol * |expected| (numpy.isclose)."""

    atol: float = 1e-6
    rtol: float = 0.0
    min_agreement: float = 1.0  # top-1 agreement required for classifier outputs
    allow_non_finite: frozenset[str] = frozenset()  # outputs whose NaN/Inf may match the golden set's

    @classmethod
    def of(cls, settings: Any, atol: float | None = None, rtol: float | None = None) -> Tolerance:
        """From a VerifyConfig (or anything with its fields), with optional overrides."""
        return cls(settings.atol if atol is None else atol, settings.rtol if rtol is None else rtol,
                   settings.min_agreement, frozenset(settings.allow_non_finite))


@dataclass
class OutputComparison:
    """How one named output compares; `problem` is set for shape/dtype/missing errors."""

    name: str
    max_abs_diff: float = 0.0
    mismatches: int = 0
    elements: int = 0
    worst_index: list[int] | None = None
    worst_served: float | None = None
    worst_expected: float | None = None
    worst_excess: float = 0.0  # diff minus allowed tolerance at the worst element
    top1_agreement: float | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.mismatches == 0

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()} | {"ok": self.ok}


def is_classifier_output(array: np.ndarray) -> bool:
    """2-D float outputs with more than one column are treated as class scores."""
    return array.ndim == 2 and array.shape[1] > 1 and np.issubdtype(array.dtype, np.floating)


def compare_output(name: str, served: np.ndarray | None, expected: np.ndarray,
                   tol: Tolerance) -> OutputComparison:
    result = OutputComparison(name=name, elements=int(expected.size))
    if served is None:
        result.problem = "missing from the served response"
        return result
    if served.shape != expected.shape:
        result.problem = f"shape {list(served.shape)} served, {list(expected.shape)} expected"
        return result
    if expected.dtype.kind in "OSU" or served.dtype.kind in "OSU":
        unequal = np.asarray(served != expected)
        result.mismatches = int(unequal.sum())
        if result.mismatches:
            idx = np.unravel_index(int(np.argmax(unequal)), expected.shape)
            result.worst_index = [int(i) for i in idx]
        return result
    s = served.astype(np.float64)
    e = expected.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(s - e)
    matched = np.zeros(s.shape, dtype=bool)
    if name in tol.allow_non_finite:  # opted in: the reference has the same value at the same place
        matched = (np.isnan(s) & np.isnan(e)) | (np.isinf(s) & (s == e))
    diff = np.where(matched, 0.0, diff)
    # any other served NaN/Inf is never agreement, nor a NaN/Inf in the reference alone
    diff = np.where(~matched & ~(np.isfinite(s) & np.isfinite(e)), np.inf, diff)
    allowed = tol.atol + tol.rtol * np.abs(np.nan_to_num(e, nan=0.0, posinf=0.0, neginf=0.0))
    excess = diff - allowed
    result.mismatches = int((excess > 0).sum())
    if diff.size:
        flat = int(np.argmax(excess))
        idx = np.unravel_index(flat, expected.shape)
        result.max_abs_diff = float(diff.max())
        result.worst_index = [int(i) for i in idx]
        result.worst_served = float(s[idx])
        result.worst_expected = float(e[idx])
        result.worst_excess = float(excess[idx])
    if is_classifier_output(expected) and expected.shape[0] > 0:
        finite_rows = np.isfinite(s).all(axis=1) & np.isfinite(e).all(axis=1)  # argmax of a NaN row is 0
        agree = (np.argmax(s, axis=1) == np.argmax(e, axis=1)) & finite_rows
        result.top1_agreement = float(np.mean(agree))
    return result


@dataclass
class Verdict:
    """All outputs compared; `worst` is the output with the largest tolerance excess."""

    outputs: dict[str, OutputComparison] = field(default_factory=dict)
    tolerance: Tolerance = field(default_factory=Tolerance)

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs.values()), default=0.0)

    @property
    def agreement(self) -> float | None:
        values = [o.top1_agreement for o in self.outputs.values() if o.top1_agreement is not None]
        return min(values) if values else None

    @property
    def empty(self) -> bool:
        """Nothing was compared: no golden outputs, or none with an element."""
        return not self.outputs or all(o.elements == 0 for o in self.outputs.values())

    @property
    def ok(self) -> bool:
        agree = self.agreement
        return not self.empty and all(o.ok for o in self.outputs.values()) and (
            agree is None or agree >= self.tolerance.min_agreement)

    @property
    def worst(self) -> OutputComparison | None:
        if not self.outputs:
            return None
        return max(self.outputs.values(),
                   key=lambda o: (o.problem is not None, o.mismatches > 0, o.worst_excess))

    def reason(self) -> str | None:
        """One line naming the worst output and index, or None when everything passed."""
        if self.ok:
            return None
        if self.empty:
            return "nothing to compare: the golden set has no output values"
        worst = self.worst
        assert worst is not None
        if worst.problem:
            return f"output {worst.name!r}: {worst.problem}"
        if worst.mismatches:
            return (f"output {worst.name!r} differs at index {worst.worst_index}: served "
                    f"{worst.worst_served:.6g}, expected {worst.worst_expected:.6g} "
                    f"(|diff| {worst.max_abs_diff:.3g} > atol {self.tolerance.atol:g} + "
                    f"rtol {self.tolerance.rtol:g}); {worst.mismatches}/{worst.elements} elements "
                    f"out of tolerance")
        return (f"top-1 agreement {self.agreement:.3f} below the required "
                f"{self.tolerance.min_agreement:.3f}")


def compare(served: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
            tol: Tolerance) -> Verdict:
    """Compare every golden output (extra served outputs are ignored)."""
    return Verdict({name: compare_output(name, served.get(name), exp, tol)
                    for name, exp in expected.items()}, tol)
