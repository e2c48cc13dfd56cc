"""suggest_bounds on synthetic range-test curves whose right answer is known."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest

from clr.bounds import Bounds, UnusableRangeTest, suggest_bounds
from clr.range_test import LossMonitor, RangeTestResult, lr_ramp

Curve = Callable[[float], float]


def synthetic_result(
    accuracy: Curve | None,
    loss: Curve,
    *,
    min_lr: float = 0.001,
    max_lr: float = 0.1,
    iterations: int = 400,
    eval_every: int = 10,
    ramp: str = "linear",
    accuracy_noise: float = 0.0,
    loss_noise: float = 0.0,
    seed: int = 0,
) -> RangeTestResult:
    """What range_test would record if accuracy and loss followed the given curves of the LR.

    Smoothing and the stop rule are the real LossMonitor's; noise is Gaussian, seeded
    (accuracy noise in accuracy points, loss noise as a share of the loss).
    """
    rng = np.random.default_rng(seed)
    monitor = LossMonitor()
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    evals: list[tuple[int, float, float, float]] = []
    stop_reason = "completed"
    for i in range(iterations):
        lr = lr_ramp(i, min_lr, max_lr, iterations, ramp)
        raw = loss(lr) * (1 + loss_noise * rng.standard_normal())
        lrs.append(lr)
        losses.append(raw)
        smoothed.append(monitor.update(raw))
        if monitor.stop_reason is not None:
            stop_reason = monitor.stop_reason
            break
        if accuracy is not None and (i % eval_every == 0 or i == iterations - 1):
            acc = min(1.0, max(0.0, accuracy(lr) + accuracy_noise * rng.standard_normal()))
            evals.append((i, lr, acc, loss(lr)))
    return RangeTestResult(
        min_lr=min_lr,
        max_lr=max_lr,
        ramp=ramp,
        iterations=iterations,
        lrs=tuple(lrs),
        losses=tuple(losses),
        smoothed_losses=tuple(smoothed),
        eval_iterations=tuple(e[0] for e in evals),
        eval_lrs=tuple(e[1] for e in evals),
        accuracies=tuple(e[2] for e in evals),
        eval_losses=tuple(e[3] for e in evals),
        stopped_at=len(lrs),
        stop_reason=stop_reason,
    )


def rise_plateau_fall(lr: float) -> float:
    """10% until lr 0.01, a quarter-sine rise to 90% at 0.05, flat to 0.08, then falling."""
    if lr <= 0.01:
        return 0.1
    if lr <= 0.05:
        return 0.1 + 0.8 * math.sin(math.pi / 2 * (lr - 0.01) / 0.04)
    if lr <= 0.08:
        return 0.9
    return 0.9 - 20 * (lr - 0.08)


def falling_loss(lr: float) -> float:
    """2.3 until lr 0.01, falling to 0.3 at 0.05, lowest at 0.06, then rising steeply."""
    if lr <= 0.01:
        return 2.3
    if lr <= 0.05:
        return 2.3 - 2.0 * math.sin(math.pi / 2 * (lr - 0.01) / 0.04)
    if lr <= 0.06:
        return 0.3 - 10 * (lr - 0.05)
    return 0.2 * math.exp(150 * (lr - 0.06))


def check_invariants(bounds: Bounds, result: RangeTestResult) -> None:
    assert result.min_lr <= bounds.base_lr < bounds.max_lr <= result.max_lr
    if result.stop_reason != "completed":
        assert bounds.max_lr < result.lrs[-1]
    assert bounds.reason.startswith(f"{bounds.method} rule:")


def test_accuracy_rule_finds_start_and_stall_of_a_known_rise() -> None:
    result = synthetic_result(rise_plateau_fall, falling_loss)
    bounds = suggest_bounds(result)
    check_invariants(bounds, result)
    assert bounds.method == "accuracy"
    # The rise starts at 0.01; 10% of it is reached at 0.0126. It is 90% done at 0.0385
    # and flat from 0.05 to 0.08.
    assert 0.011 <= bounds.base_lr <= 0.015
    assert 0.035 <= bounds.max_lr <= 0.08
    assert "accuracy rose from 10%" in bounds.reason


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_rule_tolerates_noise(seed: int) -> None:
    result = synthetic_result(
        rise_plateau_fall, falling_loss, accuracy_noise=0.02, loss_noise=0.1, seed=seed
    )
    bounds = suggest_bounds(result)
    check_invariants(bounds, result)
    assert bounds.method == "accuracy"
    assert 0.008 <= bounds.base_lr <= 0.02
    assert 0.03 <= bounds.max_lr <= 0.08


def test_accuracy_rule_on_a_logistic_rise() -> None:
    def logistic(lr: float) -> float:
        return 0.1 + 0.8 / (1 + math.exp(-(lr - 0.03) / 0.004))

    bounds = suggest_bounds(synthetic_result(logistic, falling_loss))
    assert bounds.method == "accuracy"
    # 10% of the rise is crossed at 0.03 - 0.004 * ln 9 = 0.0212, 90% at 0.0388.
    assert bounds.base_lr == pytest.approx(0.0212, abs=0.002)
    assert bounds.max_lr == pytest.approx(0.0388, abs=0.002)


def test_accuracy_rule_on_an_exponential_ramp_interpolates_on_log_scale() -> None:
    def log_rise(lr: float) -> float:
        # Linear in log10(lr): 10% at lr 1e-3, 90% at lr 1e-2, flat afterwards.
        share = min(1.0, max(0.0, math.log10(lr) + 3))
        return 0.1 + 0.8 * share

    result = synthetic_result(
        log_rise,
        lambda lr: 2.3 - 2 * min(1.0, max(0.0, math.log10(lr) + 3)),
        min_lr=1e-4,
        max_lr=1.0,
        ramp="exponential",
    )
    bounds = suggest_bounds(result)
    assert bounds.method == "accuracy"
    assert bounds.base_lr == pytest.approx(10**-2.9, rel=0.15)
    assert bounds.max_lr == pytest.approx(10**-2.1, rel=0.15)


@pytest.mark.parametrize(
    ("ramp", "base_lr", "max_lr"),
    [
        # On the ramp's log scale: 10**-3 + 0.5 decade, 10**0 + 0.625 decade.
        ("exponential", 10**-2.5, 10**0.625),
        # Linear: halfway from 0.001 to 0.01, 0.625 of the way from 1 to 10.
        ("linear", 0.0055, 6.625),
    ],
)
def test_crossings_are_interpolated_exactly_on_the_ramps_scale(
    ramp: str, base_lr: float, max_lr: float
) -> None:
    # Evaluations one decade apart, from 1e-5 to 10. Accuracies in steps, which the median
    # keeps and the mean of three spreads: 0.1 0.1 0.1 | 0.26 0.26 | 0.9 0.9 smooths to
    # 0.1 0.1 0.46/3 0.62/3 1.42/3 2.06/3 0.9. Start 0.1, rise 0.8: base_lr is where the
    # curve crosses 0.18, halfway from 0.46/3 (lr 1e-3) to 0.62/3 (lr 1e-2); max_lr where it
    # crosses 0.82, at 0.4/3 / (0.64/3) = 0.625 of the way from 2.06/3 (lr 1) to 0.9 (lr 10).
    eval_lrs = tuple(10.0**k for k in range(-5, 2))
    accuracies = (0.1, 0.1, 0.1, 0.26, 0.26, 0.9, 0.9)
    result = RangeTestResult(
        min_lr=1e-5,
        max_lr=10.0,
        ramp=ramp,
        iterations=61,
        lrs=tuple(lr_ramp(i, 1e-5, 10.0, 61, ramp) for i in range(61)),
        losses=(2.3,) * 61,
        smoothed_losses=(2.3,) * 61,
        eval_iterations=tuple(range(0, 61, 10)),
        eval_lrs=eval_lrs,
        accuracies=accuracies,
        eval_losses=(2.3,) * 7,
        stopped_at=61,
        stop_reason="completed",
    )
    bounds = suggest_bounds(result)
    assert bounds.method == "accuracy"
    assert bounds.base_lr == pytest.approx(base_lr, rel=1e-9)
    assert bounds.max_lr == pytest.approx(max_lr, rel=1e-9)


def test_ragged_accuracy_ends_the_range_before_its_later_peak() -> None:
    def ragged(lr: float) -> float:
        # Rises to 70% at 0.03, collapses to 45% at 0.04, recovers to 90% at 0.06.
        if lr <= 0.01:
            return 0.1
        if lr <= 0.03:
            return 0.1 + 0.6 * (lr - 0.01) / 0.02
        if lr <= 0.04:
            return 0.7 - 25 * (lr - 0.03)
        return min(0.9, 0.45 + 22.5 * (lr - 0.04))

    bounds = suggest_bounds(synthetic_result(ragged, falling_loss))
    assert bounds.method == "accuracy"
    assert 0.025 <= bounds.max_lr <= 0.035
    assert "ragged" in bounds.reason


def test_falling_accuracy_puts_max_lr_before_the_fall() -> None:
    def rise_then_fall(lr: float) -> float:
        if lr <= 0.01:
            return 0.1
        if lr <= 0.03:
            return 0.1 + 0.8 * (lr - 0.01) / 0.02
        return 0.9 - 10 * (lr - 0.03)

    bounds = suggest_bounds(synthetic_result(rise_then_fall, falling_loss))
    assert bounds.method == "accuracy"
    assert 0.01 <= bounds.base_lr < bounds.max_lr <= 0.03


def test_loss_rule_without_held_out_data() -> None:
    result = synthetic_result(None, falling_loss, loss_noise=0.05)
    assert result.stop_reason == "diverged"
    bounds = suggest_bounds(result)
    check_invariants(bounds, result)
    assert bounds.method == "loss"
    # The loss starts to fall at 0.01 (10% of its drop by 0.0126) and is lowest at 0.06.
    assert 0.01 <= bounds.base_lr <= 0.02
    assert 0.05 <= bounds.max_lr <= 0.065
    assert "no held-out accuracy" in bounds.reason


def test_loss_rule_when_accuracy_is_flat() -> None:
    result = synthetic_result(lambda lr: 0.1, falling_loss, accuracy_noise=0.01)
    bounds = suggest_bounds(result)
    assert bounds.method == "loss"
    assert "accuracy did not rise clearly" in bounds.reason


def test_max_over_four_when_the_fall_starts_at_min_lr() -> None:
    def falls_at_once(lr: float) -> float:
        # Falling from the first iteration (min_lr is already a working LR), lowest at 0.06.
        if lr <= 0.06:
            return 0.1 + 2.2 * math.exp(-lr / 0.005)
        return 0.1 * math.exp(150 * (lr - 0.06))

    result = synthetic_result(None, falls_at_once, min_lr=0.005)
    bounds = suggest_bounds(result)
    check_invariants(bounds, result)
    assert bounds.method == "max_lr/4"
    assert 0.05 <= bounds.max_lr <= 0.065
    assert bounds.base_lr == pytest.approx(bounds.max_lr / 4)
    assert "at or below min_lr" in bounds.reason


def test_max_over_four_takes_the_accuracy_max_when_accuracy_rises_at_once() -> None:
    def rises_at_once(lr: float) -> float:
        # Already 14% at min_lr 0.001 and 24% at the second evaluation (lr 0.0035).
        return min(0.9, 0.1 + 0.8 * lr / 0.02)

    result = synthetic_result(rises_at_once, lambda lr: 2.3, accuracy_noise=0.005)
    bounds = suggest_bounds(result)
    assert bounds.method == "max_lr/4"
    # From 14% to 90%, 90% of the rise is 82.4%, reached at lr 0.0181.
    assert bounds.max_lr == pytest.approx(0.0181, abs=0.002)
    assert bounds.base_lr == pytest.approx(bounds.max_lr / 4)


@pytest.mark.parametrize("seed", range(5))
def test_flat_curves_are_unusable(seed: int) -> None:
    result = synthetic_result(
        lambda lr: 0.1, lambda lr: 2.3, accuracy_noise=0.01, loss_noise=0.05, seed=seed
    )
    flat = r"accuracy did not rise clearly.*loss did not fall clearly.*widen the LR range"
    with pytest.raises(UnusableRangeTest, match=flat):
        suggest_bounds(result)


def test_divergence_from_the_start_is_unusable() -> None:
    result = synthetic_result(
        lambda lr: 0.1, lambda lr: 2.3 * math.exp(3000 * lr), min_lr=0.001, max_lr=0.1
    )
    assert result.stop_reason == "diverged"
    assert result.stopped_at < 10
    with pytest.raises(UnusableRangeTest, match="lower min_lr") as raised:
        suggest_bounds(result)
    assert isinstance(raised.value, ValueError)


def test_same_input_same_output_also_after_a_json_round_trip() -> None:
    result = synthetic_result(rise_plateau_fall, falling_loss, accuracy_noise=0.02, seed=7)
    shipped = RangeTestResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))
    assert suggest_bounds(result) == suggest_bounds(result) == suggest_bounds(shipped)


def test_bounds_to_dict_is_json_ready() -> None:
    bounds = suggest_bounds(synthetic_result(rise_plateau_fall, falling_loss))
    assert json.loads(json.dumps(bounds.to_dict())) == {
        "base_lr": bounds.base_lr,
        "max_lr": bounds.max_lr,
        "method": "accuracy",
        "reason": bounds.reason,
    }


def test_bounds_keep_their_guarantees_on_random_curves() -> None:
    rng = np.random.default_rng(0)
    for seed in range(30):
        start, end = np.sort(rng.uniform(0.0, 0.1, size=2))
        top, diverge = rng.uniform(0.2, 1.0), rng.uniform(0.03, 0.2)

        def share(lr: float, start: float = start, end: float = end) -> float:
            return min(1.0, max(0.0, (lr - start) / (end - start + 1e-9)))

        def accuracy(lr: float, top: float = top) -> float:
            return 0.1 + (top - 0.1) * share(lr)

        def loss(lr: float, diverge: float = diverge) -> float:
            return 0.2 + 2.1 * (1 - share(lr)) + 0.3 * math.exp(min(50.0, 80 * (lr - diverge)))

        result = synthetic_result(
            accuracy if seed % 4 else None,
            loss,
            ramp="exponential" if seed % 2 else "linear",
            iterations=int(rng.choice([60, 200, 400])),
            accuracy_noise=float(rng.choice([0.0, 0.02])),
            loss_noise=float(rng.choice([0.0, 0.1])),
            seed=seed,
        )
        try:
            bounds = suggest_bounds(result)
        except UnusableRangeTest as error:
            assert "no rule gives bounds" in str(error)
        else:
            check_invariants(bounds, result)
