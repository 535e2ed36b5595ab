"""verify's comparison fails closed: a served NaN/Inf never agrees (unless the output is opted in), nothing compared = failure."""

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
def test_a_served_non_finite_value_fails_even_where_the_golden_set_holds_the_same(value: float) -> None:
    """A hand-pushed golden set may hold the model's own NaNs: NaN served is never agreement."""
    expected = EXPECTED.copy()
    expected[0, 1] = value
    verdict = compare({"p": expected.copy()}, {"p": expected}, Tolerance(min_agreement=0.0))
    assert not verdict.ok and verdict.outputs["p"].mismatches == 1 and verdict.outputs["p"].worst_index == [0, 1]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_an_output_opted_in_agrees_on_the_same_non_finite_value_at_the_same_place(value: float) -> None:
    expected = EXPECTED.copy()
    expected[0, 1] = value
    tol = Tolerance(min_agreement=0.0, allow_non_finite=frozenset({"p"}))
    assert compare({"p": expected.copy()}, {"p": expected}, tol).outputs["p"].ok
    elsewhere = expected.copy()
    elsewhere[0, 1], elsewhere[1, 1] = EXPECTED[0, 1], value  # the same value at another place
    assert not compare({"p": elsewhere}, {"p": expected}, tol).outputs["p"].ok


def test_all_nan_rows_are_never_top1_agreement() -> None:
    nan_rows = np.full_like(EXPECTED, np.nan)
    tol = Tolerance(atol=np.inf, min_agreement=0.5, allow_non_finite=frozenset({"p"}))  # values aside
    verdict = compare({"p": nan_rows}, {"p": nan_rows.copy()}, tol)
    assert verdict.outputs["p"].top1_agreement == 0.0 and not verdict.ok


def test_opposite_infinities_disagree() -> None:
    expected = np.array([np.inf, 1.0])
    verdict = compare({"y": np.array([-np.inf, 1.0])}, {"y": expected}, Tolerance())
    assert not verdict.ok and verdict.outputs["y"].mismatches == 1


def test_nothing_to_compare_is_a_failure() -> None:
    assert not compare({}, {}, Tolerance()).ok
    assert compare({}, {}, Tolerance()).reason() == "nothing to compare: the golden set has no output values"
    empty = np.zeros((0, 2), np.float32)
    assert not compare({"p": empty}, {"p": empty}, Tolerance()).ok
