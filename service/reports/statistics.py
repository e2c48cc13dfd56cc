"""The numbers of a comparison report: target crossings, confidence intervals, Welch's t-test,
and AlgoPerf's median time to target, where a seed that misses counts as infinity.

Pure functions over plain sequences; they return None where a figure does not exist (a curve
that never reaches the target, a single seed) so that callers never carry NaN into JSON.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import stats


def iterations_to_target(
    iterations: npt.ArrayLike, accuracies: npt.ArrayLike, target: float
) -> float | None:
    """The iteration at which the accuracy crosses `target` to stay, or None if it never does.

    A crossing counts only where the accuracy is at or above `target` at that evaluation and
    at the next one, so a single spike followed by a dip does not count. A crossing at the
    final evaluation counts: it has no successor to contradict it. The iteration is linearly
    interpolated between the previous evaluation (below the target) and the crossing one; a
    curve already at or above the target at its first evaluation crosses there.
    """
    its = np.asarray(iterations, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    if its.shape != acc.shape:
        raise ValueError(
            f"iterations and accuracies must have the same length, got {its.size} and {acc.size}"
        )
    above = acc >= target  # NaN compares False: a non-finite accuracy is never a crossing
    stays = above & np.append(above[1:], True)
    if not stays.any():
        return None
    i = int(np.argmax(stays))
    if i == 0:
        return float(its[0])
    # The first stay-above point follows a point below the target (else that one would count).
    a0, a1 = acc[i - 1], acc[i]
    if not math.isfinite(a0):
        return float(its[i])
    return float(its[i - 1] + (target - a0) / (a1 - a0) * (its[i] - its[i - 1]))


def time_to_target(
    iterations: npt.ArrayLike,
    accuracies: npt.ArrayLike,
    elapsed_s: npt.ArrayLike,
    target: float,
) -> float | None:
    """Training seconds at the crossing `iterations_to_target` finds, or None if none.

    The time is interpolated linearly in the iteration between the evaluations around the
    crossing, as the iteration itself is.
    """
    crossing = iterations_to_target(iterations, accuracies, target)
    if crossing is None:
        return None
    its = np.asarray(iterations, dtype=float)
    seconds = np.asarray(elapsed_s, dtype=float)
    if its.shape != seconds.shape:
        raise ValueError(
            f"iterations and elapsed_s must have the same length, got {its.size} and {seconds.size}"
        )
    value = float(np.interp(crossing, its, seconds))
    return value if math.isfinite(value) else None


def _with_misses(values: Sequence[float | None]) -> npt.NDArray[np.float64]:
    """`values` as floats, a miss (None) as infinity: AlgoPerf's rule for a run that never
    reaches the target."""
    return np.array([math.inf if v is None else v for v in values], dtype=float)


def median_with_misses(values: Sequence[float | None]) -> float:
    """The median over seeds, a miss (None) counting as infinity; inf when half or more
    missed (of an even count, when a middle one did)."""
    if not values:
        raise ValueError("values must hold at least one seed's figure, got none")
    return float(np.median(_with_misses(values)))


def bootstrap_median_ci(
    values: Sequence[float | None],
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `median_with_misses`: resample the seeds with
    replacement, take each resample's median, and read its (1 - confidence) / 2 and
    (1 + confidence) / 2 quantiles (no interpolation, so an infinite median stays infinite).

    The upper end is inf when too many resamples have half or more seeds missing: the data
    do not bound the time from above. None for fewer than 2 seeds. Seeded: the same values
    give the same interval.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    if len(values) < 2:
        return None
    x = _with_misses(values)
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(resamples, x.size))]
    medians = np.median(samples, axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def accuracy_at(
    iterations: npt.ArrayLike, accuracies: npt.ArrayLike, at_iteration: float
) -> float | None:
    """The accuracy at `at_iteration`, linearly interpolated; None outside the evaluated span."""
    its = np.asarray(iterations, dtype=float)
    if its.size == 0 or not its[0] <= at_iteration <= its[-1]:
        return None
    value = float(np.interp(at_iteration, its, np.asarray(accuracies, dtype=float)))
    return value if math.isfinite(value) else None


def mean_ci(
    values: npt.ArrayLike, confidence: float = 0.95
) -> tuple[float, float | None, float | None]:
    """Mean and Student-t confidence interval; (mean, None, None) for a single value."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("values must hold at least one number, got none")
    mean = float(x.mean())
    if x.size == 1:
        return mean, None, None
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test of `a` against `b`.

    None when either sample has fewer than 2 values, or when the test is undefined (both samples
    constant and equal: identical results). Two constant samples that differ give p = 0.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    with warnings.catch_warnings():
        # Seeds often end at exactly the same accuracy on a small held-out set; scipy warns
        # about a constant sample, and the nan it then may return is handled below.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None
