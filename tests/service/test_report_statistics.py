"""The report's statistics against values computed by hand."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from service.reports.statistics import accuracy_at, iterations_to_target, mean_ci, welch_t_test

ITS = [100, 200, 300, 400]


def test_crossing_is_interpolated_between_evaluations() -> None:
    # 0.7 at 200 -> 0.9 at 300: 0.8 lies halfway.
    assert iterations_to_target(ITS, [0.5, 0.7, 0.9, 0.92], 0.8) == pytest.approx(250)


def test_spike_followed_by_a_dip_does_not_count() -> None:
    its = [100, 200, 300, 400, 500]
    # 0.85 at 200 drops to 0.7 at 300; the crossing that stays is 0.7 (300) -> 0.82 (400).
    crossing = iterations_to_target(its, [0.5, 0.85, 0.7, 0.82, 0.9], 0.8)
    assert crossing == pytest.approx(300 + 0.1 / 0.12 * 100)


def test_crossing_at_the_last_evaluation_counts() -> None:
    assert iterations_to_target(ITS, [0.5, 0.6, 0.7, 0.85], 0.8) == pytest.approx(300 + 2 / 3 * 100)


def test_curve_starting_above_target_crosses_at_its_first_evaluation() -> None:
    assert iterations_to_target(ITS, [0.81, 0.85, 0.9, 0.9], 0.8) == 100


def test_curve_that_never_stays_above_target_has_no_crossing() -> None:
    assert iterations_to_target(ITS, [0.5, 0.6, 0.7, 0.79], 0.8) is None
    assert iterations_to_target(ITS, [0.5, 0.9, 0.7, 0.79], 0.8) is None
    assert iterations_to_target([], [], 0.8) is None


def test_a_nan_accuracy_never_counts_as_above_the_target() -> None:
    nan = math.nan
    assert iterations_to_target(ITS, [0.5, nan, nan, nan], 0.8) is None
    # Above at 200, NaN at 300: no stay; the NaN at 300 is not "still above" either.
    assert iterations_to_target(ITS, [0.5, 0.9, nan, 0.7], 0.8) is None
    assert iterations_to_target(ITS, [0.5, 0.9, nan, 0.9], 0.8) == 400  # the last one counts


def test_a_crossing_after_a_nan_is_not_interpolated_from_it() -> None:
    assert iterations_to_target(ITS, [0.5, math.nan, 0.9, 0.92], 0.8) == 300


def test_crossing_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        iterations_to_target(ITS, [0.5], 0.8)


def test_accuracy_at_interpolates_and_stops_at_the_curve_end() -> None:
    acc = [0.5, 0.7, 0.9, 0.92]
    assert accuracy_at(ITS, acc, 150) == pytest.approx(0.6)
    assert accuracy_at(ITS, acc, 400) == pytest.approx(0.92)
    assert accuracy_at(ITS, acc, 401) is None
    assert accuracy_at(ITS, acc, 50) is None


def test_mean_ci_matches_student_t_by_hand() -> None:
    values = [0.90, 0.92, 0.94]
    # mean 0.92, sample sd 0.02, t(0.975, df=2) = 4.302652729749462 (tables: 4.303)
    half = 4.302652729749462 * 0.02 / math.sqrt(3)
    mean, low, high = mean_ci(values)
    assert mean == pytest.approx(0.92)
    assert low == pytest.approx(0.92 - half)
    assert high == pytest.approx(0.92 + half)


def test_mean_ci_of_one_value_has_no_interval() -> None:
    assert mean_ci([0.9]) == (0.9, None, None)


def test_mean_ci_refuses_empty_values_and_bad_confidence() -> None:
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([0.9, 0.8], confidence=95)


def test_welch_matches_hand_computation() -> None:
    a, b = [0.90, 0.92, 0.94], [0.85, 0.86, 0.90]
    var_a, var_b = 0.0004, (0.02**2 + 0.01**2 + 0.03**2) / 2  # sample variances
    se2 = var_a / 3 + var_b / 3
    t = (0.92 - 0.87) / math.sqrt(se2)
    df = se2**2 / ((var_a / 3) ** 2 / 2 + (var_b / 3) ** 2 / 2)
    expected = 2 * stats.t.sf(t, df)
    assert welch_t_test(a, b) == pytest.approx(expected)
    assert welch_t_test(a, b) == pytest.approx(0.0638, abs=1e-4)


def test_welch_needs_two_values_per_sample() -> None:
    assert welch_t_test([0.9], [0.8, 0.85]) is None


def test_welch_of_identical_results_is_none_not_nan() -> None:
    assert welch_t_test([0.9, 0.9], [0.9, 0.9]) is None


def test_welch_of_two_different_constant_samples_is_zero() -> None:
    assert welch_t_test([0.9, 0.9], [0.8, 0.8]) == 0.0
