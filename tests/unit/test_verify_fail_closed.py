"""verify's comparison fails closed: NaN/Inf only where the reference has them, nothing compared = failure."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.verify.compare import Tolerance, compare

EXPECTED = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_served_value_is_a_mismatch(bad: float) -> None:
    served = EXPECTED.copy()
    served[1, 0] = bad
    verdict = compare({"p": served}, {"p": EXPECTED}, Tolerance(atol=1.0))  # even with a huge tolerance
    assert not verdict.ok
    assert verdict.outputs["p"].worst_index == [1, 0] and verdict.outputs["p"].mismatches == 1
    assert "differs at index [1, 0]" in (verdict.reason() or "")


def test_all_nan_served_against_finite_golden_fails() -> None:
    verdict = compare({"p": np.full_like(EXPECTED, np.nan)}, {"p": EXPECTED}, Tolerance())
    assert not verdict.ok and verdict.outputs["p"].mismatches == EXPECTED.size
    assert verdict.max_abs_diff == np.inf


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_the_same_non_finite_value_at_the_same_place_agrees(value: float) -> None:
    expected = EXPECTED.copy()
    expected[0, 1] = value
    assert compare({"p": expected.copy()}, {"p": expected}, Tolerance(min_agreement=0.0)).outputs["p"].ok


def test_opposite_infinities_disagree() -> None:
    expected = np.array([np.inf, 1.0])
    verdict = compare({"y": np.array([-np.inf, 1.0])}, {"y": expected}, Tolerance())
    assert not verdict.ok and verdict.outputs["y"].mismatches == 1


def test_nothing_to_compare_is_a_failure() -> None:
    assert not compare({}, {}, Tolerance()).ok
    assert compare({}, {}, Tolerance()).reason() == "nothing to compare: the golden set has no output values"
    empty = np.zeros((0, 2), np.float32)
    assert not compare({"p": empty}, {"p": empty}, Tolerance()).ok
