"""Suggest CLR bounds (base_lr, max_lr) from a range test, by the paper's rule or a fallback.

Rules, tried in this order (`Bounds.method` names the one used):

1. "accuracy" (the paper): base_lr where the held-out accuracy first rises clearly above its
   starting level (10% of its total rise), max_lr where the rise stalls (90% of the rise) or,
   if earlier, where the curve turns ragged and falls back (by 10% of the rise).
2. "loss": base_lr where the training loss has fallen by 10% of its total drop, max_lr where
   it reaches its minimum (before divergence).
3. "max_lr/4": when a curve gives a max_lr but its rise starts at the very beginning of the
   test (so base_lr lies at or below min_lr), base_lr = max_lr / 4 (the paper's rule of thumb).

Curves are smoothed with a centred moving median then mean (no lag, robust to single spikes),
and a rise only counts when it is several times the curve's own noise. LRs between two
recorded points are interpolated on the ramp's scale (linear, or logarithmic for an
exponential ramp). Same input, same output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clr.range_test import RangeTestResult

BASE_FRACTION = 0.10  # share of the total rise (or drop) above the start that is a clear rise
STALL_FRACTION = 0.90  # share of the total accuracy rise at which the rise has stalled
RAGGED_FRACTION = 0.10  # a fall back by this share of the rise ends the useful range
NOISE_MULTIPLE = 5.0  # a rise (drop) must exceed this many times the curve's noise
MIN_ACCURACY_RISE = 0.02  # accuracy fraction; below this the curve is flat whatever its noise
MIN_LOSS_DROP = 0.05  # share of the starting loss; below this the loss is flat
MIN_EVALUATIONS = 5
MIN_ITERATIONS = 10


class UnusableRangeTest(ValueError):
    """No rule could read bounds from the range test; the message says why and what to change."""


@dataclass(frozen=True)
class Bounds:
    """CLR bounds, the rule that gave them ("accuracy", "loss" or "max_lr/4") and why."""

    base_lr: float
    max_lr: float
    method: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class _Reading:
    """What one curve says: both bounds, only max_lr (base None), or nothing (max None)."""

    base_lr: float | None
    max_lr: float | None
    text: str


def _moving(values: np.ndarray, half: int, reduce: Any) -> np.ndarray:
    # Centred window of 2 * half + 1 points, truncated at the ends (narrowing it instead
    # would leave the end points as noisy as the raw values).
    n = len(values)
    return np.array([reduce(values[max(0, i - half) : i + half + 1]) for i in range(n)])


def _smooth(values: np.ndarray, half: int) -> np.ndarray:
    return _moving(_moving(values, half, np.median), half, np.mean)


def _noise(raw: np.ndarray) -> float:
    """Standard deviation of the point-to-point noise, robustly, ignoring linear trends."""
    # Second differences of independent noise have 6x its variance; the median absolute
    # deviation (x 1.4826 for Gaussian noise) ignores the few points where the curve bends.
    return float(1.4826 * np.median(np.abs(np.diff(raw, 2))) / math.sqrt(6))


class _Scale:
    """Positions of LRs on the ramp's scale, so interpolation follows the ramp."""

    def __init__(self, ramp: str) -> None:
        self.log = ramp == "exponential"

    def to_position(self, lrs: np.ndarray) -> np.ndarray:
        return np.log(lrs) if self.log else lrs

    def to_lr(self, position: float) -> float:
        return float(math.exp(position) if self.log else position)


def _crossing(positions: np.ndarray, curve: np.ndarray, level: float) -> tuple[int, float]:
    """First index where `curve` reaches `level`, and the position interpolated before it."""
    i = int(np.argmax(curve >= level))
    if i == 0:
        return 0, float(positions[0])
    below, above = curve[i - 1], curve[i]
    share = (level - below) / (above - below)
    return i, float(positions[i - 1] + share * (positions[i] - positions[i - 1]))


def _stop_note(result: RangeTestResult) -> str:
    if result.stop_reason == "completed" or not result.lrs:
        return ""
    return f"; the test stopped ({result.stop_reason}) at lr {result.lrs[-1]:.3g}"


def _accuracy_reading(result: RangeTestResult, scale: _Scale) -> _Reading:
    if not result.accuracies:
        return _Reading(None, None, "no held-out accuracy was recorded")
    stopped_lr = result.lrs[-1] if result.stop_reason != "completed" else math.inf
    points = [
        (lr, acc)
        for lr, acc in zip(result.eval_lrs, result.accuracies, strict=True)
        if math.isfinite(acc) and lr < stopped_lr
    ]
    if len(points) < MIN_EVALUATIONS:
        return _Reading(
            None,
            None,
            f"only {len(points)} accuracy evaluations before the test ended"
            f" (at least {MIN_EVALUATIONS} are needed)",
        )
    lrs = np.array([lr for lr, _ in points])
    raw = np.array([acc for _, acc in points])
    positions = scale.to_position(lrs)
    curve = _smooth(raw, 1)
    # The first evaluation (after one iteration) is the untrained level, free of training
    # noise; the smoothed curve's first point would already lean towards the rise after it.
    start = float(raw[0])
    peak_index = int(np.argmax(curve))
    rise = float(curve[peak_index]) - start
    noise = _noise(raw)
    # Flatness is judged on the smoothed curve alone: one raw start point may sit in the noise.
    lowest = float(np.min(curve[: peak_index + 1]))
    if rise <= 0 or curve[peak_index] - lowest < max(MIN_ACCURACY_RISE, NOISE_MULTIPLE * noise):
        return _Reading(
            None,
            None,
            f"held-out accuracy did not rise clearly (from {start:.0%}; smoothed"
            f" {lowest:.0%} to {curve[peak_index]:.0%}, noise {noise:.1%}) across lr"
            f" {lrs[0]:.3g}-{lrs[-1]:.3g}",
        )
    base_level = start + BASE_FRACTION * rise
    base_index, base_position = _crossing(positions, curve, base_level)
    stall_level = start + STALL_FRACTION * rise
    max_index, max_position = _crossing(positions, curve, stall_level)
    how = f"reached {stall_level:.0%} ({STALL_FRACTION:.0%} of the rise)"
    running_max = np.maximum.accumulate(curve)
    fallen = curve < running_max - max(RAGGED_FRACTION * rise, 2 * noise)
    fell = np.nonzero(fallen[base_index + 1 : max_index + 1])[0]
    if len(fell):
        fell_index = base_index + 1 + int(fell[0])
        max_index = int(np.argmax(curve[:fell_index]))
        max_position = float(positions[max_index])
        how = (
            f"was highest ({curve[max_index]:.0%}) before it turned ragged and fell to"
            f" {curve[fell_index]:.0%} at lr {lrs[fell_index]:.3g}"
        )
    max_lr = scale.to_lr(max_position)
    text = (
        f"held-out accuracy rose from {start:.0%} at lr {lrs[0]:.3g} to a smoothed peak of"
        f" {curve[peak_index]:.0%} at lr {lrs[peak_index]:.3g}; max_lr {max_lr:.3g} is where it"
        f" {how}"
    )
    if peak_index == len(curve) - 1:
        text += " (it was still rising at the end of the test: a wider range may allow more)"
    # With only the first evaluation below the threshold, the rise may have begun before it.
    if base_index < 2:
        return _Reading(
            None,
            max_lr,
            f"{text}; accuracy was rising from the first evaluation, so the start of the rise"
            f" lies at or below min_lr {result.min_lr:.3g}",
        )
    base_lr = scale.to_lr(base_position)
    if not base_lr < max_lr:
        return _Reading(None, max_lr, f"{text}; the rise was too abrupt to place base_lr below it")
    return _Reading(
        base_lr,
        max_lr,
        f"{text}; base_lr {base_lr:.3g} is where it first exceeded {base_level:.0%}"
        f" ({BASE_FRACTION:.0%} of the rise)",
    )


def _loss_reading(result: RangeTestResult, scale: _Scale) -> _Reading:
    losses = np.array(result.losses, dtype=float)
    finite = np.isfinite(losses)
    count = int(np.argmin(finite)) if not finite.all() else len(losses)
    if result.stop_reason == "diverged":
        # The iteration that tripped the stop rule is already past the useful range.
        count = min(count, len(losses) - 1)
    if count < MIN_ITERATIONS:
        return _Reading(
            None,
            None,
            f"only {count} iterations with a usable loss ran{_stop_note(result)}"
            f" (at least {MIN_ITERATIONS} are needed)",
        )
    raw = losses[:count]
    lrs = np.array(result.lrs[:count])
    positions = scale.to_position(lrs)
    half = max(2, count // 40)
    # Work on the improvement (minus the loss) so one crossing helper serves both curves.
    curve = -_smooth(raw, half)
    # One minibatch loss is noisy: the starting level is the median of the first window.
    start = -float(np.median(raw[: 2 * half + 1]))
    best_index = int(np.argmax(curve))
    drop = float(curve[best_index]) - start
    # The smoothed curve's noise: the raw noise through a window's median (1.25x a mean's).
    noise = 1.25 * _noise(raw) / math.sqrt(2 * half + 1)
    if drop < max(NOISE_MULTIPLE * noise, MIN_LOSS_DROP * abs(start)):
        return _Reading(
            None,
            None,
            f"training loss did not fall clearly ({-start:.3g} to at best {-curve[best_index]:.3g})"
            f" across lr {lrs[0]:.3g}-{lrs[-1]:.3g}",
        )
    max_lr = float(lrs[best_index])
    text = (
        f"smoothed training loss fell from {-start:.3g} at lr {lrs[0]:.3g} to its minimum"
        f" {-curve[best_index]:.3g} at lr {max_lr:.3g}, which is max_lr"
    )
    if best_index == count - 1:
        text += " (it was still falling at the end of the test: a wider range may allow more)"
    base_level = start + BASE_FRACTION * drop
    base_index, base_position = _crossing(positions, curve, base_level)
    # A crossing within the first smoothing window may have begun before the test did.
    if base_index <= 2 * half:
        return _Reading(
            None,
            max_lr,
            f"{text}; the loss was falling from the first iterations, so the start of the fall"
            f" lies at or below min_lr {result.min_lr:.3g}",
        )
    base_lr = scale.to_lr(base_position)
    if not base_lr < max_lr:
        return _Reading(None, max_lr, f"{text}; the fall was too abrupt to place base_lr below it")
    return _Reading(
        base_lr,
        max_lr,
        f"{text}; base_lr {base_lr:.3g} is where it had fallen to {-base_level:.3g}"
        f" ({BASE_FRACTION:.0%} of the drop)",
    )


def suggest_bounds(result: RangeTestResult) -> Bounds:
    """Suggest (base_lr, max_lr) for a cyclical LR from a range test; see the module docstring.

    Both bounds lie in [result.min_lr, result.max_lr], base_lr < max_lr, and max_lr is below
    the LR at which the test stopped for divergence. Raises UnusableRangeTest when no rule
    applies (flat curves, divergence from the start).
    """
    scale = _Scale(result.ramp)
    accuracy = _accuracy_reading(result, scale)
    if accuracy.base_lr is not None and accuracy.max_lr is not None:
        return _bounds(result, accuracy.base_lr, accuracy.max_lr, "accuracy", accuracy.text)
    loss = _loss_reading(result, scale)
    if loss.base_lr is not None and loss.max_lr is not None:
        text = f"{loss.text} (accuracy rule not applicable: {accuracy.text})"
        return _bounds(result, loss.base_lr, loss.max_lr, "loss", text)
    max_lr: float | None = accuracy.max_lr
    text = accuracy.text
    if max_lr is None:
        max_lr, text = loss.max_lr, f"{loss.text} (accuracy rule not applicable: {accuracy.text})"
    if max_lr is not None:
        base_lr = max_lr / 4
        text += f"; base_lr = max_lr / 4 = {base_lr:.3g}"
        if base_lr < result.min_lr:
            base_lr = result.min_lr
            text += f", below the tested range, so base_lr is min_lr {base_lr:.3g}"
        if base_lr < max_lr:
            return _bounds(result, base_lr, max_lr, "max_lr/4", text)
    hint = (
        "lower min_lr, the test diverged early"
        if result.stop_reason != "completed" and len(result.lrs) < result.iterations / 2
        else "widen the LR range or run longer"
    )
    raise UnusableRangeTest(f"no rule gives bounds: {accuracy.text}; {loss.text}: {hint}")


def _bounds(
    result: RangeTestResult, base_lr: float, max_lr: float, method: str, text: str
) -> Bounds:
    # Interpolation stays between recorded LRs; clamping only absorbs float rounding.
    base_lr = min(max(base_lr, result.min_lr), result.max_lr)
    max_lr = min(max(max_lr, result.min_lr), result.max_lr)
    reason = f"{method} rule: {text}{_stop_note(result)}."
    return Bounds(base_lr=base_lr, max_lr=max_lr, method=method, reason=reason)
