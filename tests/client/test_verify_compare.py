"""Pure comparison logic of the verify stage (no server)."""

from __future__ import annotations

import numpy as np

from pipeline.verify.compare import Tolerance, compare, is_classifier_output

EXPECTED = {"probabilities": np.array([[0.1, 0.9], [0.7, 0.3], [0.5, 0.4]], np.float32)}


def test_identical_outputs_pass() -> None:
    verdict = compare(EXPECTED, EXPECTED, Tolerance())
    assert verdict.ok and verdict.max_abs_diff == 0.0 and verdict.agreement == 1.0
    assert verdict.reason() is None


def test_worst_output_and_index_are_named() -> None:
    served = {"probabilities": EXPECTED["probabilities"].copy()}
    served["probabilities"][1, 0] += 1e-3
    served["probabilities"][2, 1] += 2e-3
    verdict = compare(served, EXPECTED, Tolerance(atol=1e-4))
    assert not verdict.ok
    assert verdict.worst.worst_index == [2, 1]
    assert verdict.outputs["probabilities"].mismatches == 2
    assert "output 'probabilities' differs at index [2, 1]" in verdict.reason()
    assert abs(verdict.max_abs_diff - 2e-3) < 1e-6


def test_rtol_scales_with_magnitude() -> None:
    expected = {"y": np.array([1000.0, 1.0])}
    served = {"y": np.array([1000.5, 1.0])}
    assert not compare(served, expected, Tolerance(atol=0.0, rtol=1e-4)).ok
    assert compare(served, expected, Tolerance(atol=0.0, rtol=1e-3)).ok


def test_top1_disagreement_fails_even_within_loose_tolerance() -> None:
    served = {"probabilities": np.array([[0.1, 0.9], [0.7, 0.3], [0.4, 0.5]], np.float32)}
    verdict = compare(served, EXPECTED, Tolerance(atol=0.2))
    assert verdict.outputs["probabilities"].mismatches == 0
    assert abs(verdict.agreement - 2 / 3) < 1e-9 and not verdict.ok
    assert "top-1 agreement 0.667" in verdict.reason()
    assert compare(served, EXPECTED, Tolerance(atol=0.2, min_agreement=0.5)).ok


def test_shape_and_missing_outputs_are_problems() -> None:
    assert "shape [3, 3] served" in compare({"probabilities": np.zeros((3, 3))}, EXPECTED,
                                             Tolerance()).reason()
    assert "missing" in compare({}, EXPECTED, Tolerance()).reason()


def test_nan_handling_and_classifier_detection() -> None:
    expected = {"y": np.array([np.nan, 1.0])}
    assert not compare({"y": np.array([np.nan, 1.0])}, expected, Tolerance()).ok  # NaN served: never agreement
    assert compare({"y": np.array([np.nan, 1.0])}, expected, Tolerance(allow_non_finite=frozenset({"y"}))).ok
    assert not compare({"y": np.array([0.0, 1.0])}, expected, Tolerance()).ok
    assert is_classifier_output(np.zeros((4, 5), np.float32))
    assert not is_classifier_output(np.zeros((4, 1), np.float32))
    assert not is_classifier_output(np.zeros((4, 5), np.int64))
