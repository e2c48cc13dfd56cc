"""The numbers of a comparison report: target crossings, confidence intervals, Welch's t-test.

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
