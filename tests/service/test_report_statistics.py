"""The report's statistics against values computed by hand."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from service.reports.statistics import (
    accuracy_at,
    bootstrap_median_ci,
    iterations_to_target,
    mean_ci,
    median_with_misses,
    time_to_target,
    welch_t_test,
)

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


# ---- time to target: AlgoPerf's median, a miss counting as infinity --------------------------


def test_time_to_target_is_interpolated_at_the_crossing() -> None:
    # Crossing 0.8 halfway between 200 and 300 (0.7 -> 0.9); 2.0 s at 200, 3.2 s at 300.
    seconds = [1.0, 2.0, 3.2, 4.0]
    assert time_to_target(ITS, [0.5, 0.7, 0.9, 0.92], seconds, 0.8) == pytest.approx(2.6)
    assert time_to_target(ITS, [0.5, 0.6, 0.7, 0.7], seconds, 0.8) is None
    with pytest.raises(ValueError, match="same length"):
        time_to_target(ITS, [0.5, 0.7, 0.9, 0.92], [1.0], 0.8)


def test_median_counts_a_miss_as_infinity_never_as_the_budget() -> None:
    assert median_with_misses([3.0, 1.0, 2.0]) == 2.0
    assert median_with_misses([3.0, None, 1.0]) == 3.0  # 1, 3, inf
    assert median_with_misses([1.0, 2.0, None, None]) == math.inf  # (2 + inf) / 2
    assert median_with_misses([1.0, 2.0, 4.0, None]) == 3.0
    with pytest.raises(ValueError, match="at least one"):
        median_with_misses([])


def test_bootstrap_interval_of_two_seeds_by_hand() -> None:
    # Resamples of [10, 20]: (10, 10) -> 10 a quarter of the time, (10, 20) or (20, 10) -> 15
    # half, (20, 20) -> 20 a quarter: the 2.5% and 97.5% quantiles are 10 and 20.
    assert bootstrap_median_ci([10.0, 20.0]) == (10.0, 20.0)
    # [10, miss]: medians 10 (a quarter) and inf (three quarters): unbounded above.
    assert bootstrap_median_ci([10.0, None]) == (10.0, math.inf)


def test_bootstrap_upper_end_is_unbounded_when_too_many_seeds_may_miss() -> None:
    # [3, 3, 4, 4, miss]: the median is 4, but a resample draws 3 or more misses with
    # probability 10 * 0.2^3 * 0.8^2 + 5 * 0.2^4 * 0.8 + 0.2^5 = 5.8% > 2.5%: the data do not
    # bound the median from above. It is 3 when 3 or more draws are 3s: probability 31.7%.
    assert bootstrap_median_ci([3.0, 3.0, 4.0, 4.0, None]) == (3.0, math.inf)
    # One miss in 10 seeds: P(5 or more misses of 10) = 0.16% < 2.5%, so the top is finite.
    low, high = bootstrap_median_ci([1.0, 2, 3, 4, 5, 6, 7, 8, 9, None])  # type: ignore[misc]
    assert low <= median_with_misses([1.0, 2, 3, 4, 5, 6, 7, 8, 9, None]) == 5.5 <= high < math.inf


def test_bootstrap_interval_is_seeded_and_needs_two_seeds() -> None:
    values = [1.0, 5.0, 2.0, None, 3.0]
    assert bootstrap_median_ci(values) == bootstrap_median_ci(values)
    assert bootstrap_median_ci([7.0]) is None
    assert bootstrap_median_ci([7.0, 7.0, 7.0]) == (7.0, 7.0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_median_ci(values, confidence=1.0)
