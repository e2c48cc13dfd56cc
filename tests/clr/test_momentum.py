"""Momentum cycling: the one rule, with values worked out by hand."""

from __future__ import annotations

import pytest

from clr.momentum import cycled_momentum, lr_range, momentum_schedule

TRIANGULAR = {"base_lr": 0.01, "max_lr": 0.1, "step_size": 40}


def test_triangular_momentum_is_max_at_base_lr_and_base_at_max_lr() -> None:
    momentum = momentum_schedule("triangular", TRIANGULAR, 0.85, 0.95)
    # lr: 0.01 at 0, 0.055 at step/2, 0.1 at step, back to 0.01 at 2 * step.
    # momentum = 0.95 - 0.1 * (lr - 0.01) / 0.09.
    assert momentum(0) == pytest.approx(0.95)
    assert momentum(20) == pytest.approx(0.90)
    assert momentum(40) == pytest.approx(0.85)
    assert momentum(60) == pytest.approx(0.90)
    assert momentum(80) == pytest.approx(0.95)


def test_triangular2_halves_the_momentum_dip_with_the_lr_amplitude() -> None:
    momentum = momentum_schedule("triangular2", TRIANGULAR)
    # The second cycle peaks at iteration 120 at lr 0.01 + 0.09 / 2: half the share.
    assert momentum(120) == pytest.approx(0.90)
    assert momentum(40) == pytest.approx(0.85)


def test_one_cycle_maps_its_whole_lr_range() -> None:
    params = {"max_lr": 0.1, "total_iterations": 100}  # pct_start 0.3: peak at 29
    momentum = momentum_schedule("one_cycle", params)
    # initial lr 0.1 / 25 = 0.004; lowest 0.004 / 1e4 = 4e-7 (the defaults).
    assert lr_range("one_cycle", params) == pytest.approx((4e-7, 0.1))
    assert momentum(0) == pytest.approx(0.95 - 0.1 * (0.004 - 4e-7) / (0.1 - 4e-7))
    assert momentum(29) == pytest.approx(0.85)
    assert momentum(99) == pytest.approx(0.95)


def test_decaying_policies_raise_the_momentum_as_the_lr_falls_to_zero() -> None:
    momentum = momentum_schedule("step", {"lr": 0.1, "step_size": 5, "gamma": 0.5})
    assert [momentum(0), momentum(5), momentum(10)] == pytest.approx([0.85, 0.90, 0.925])


def test_a_constant_lr_keeps_the_max_momentum() -> None:
    assert lr_range("fixed", {"lr": 0.1}) == (0.1, 0.1)
    momentum = momentum_schedule("fixed", {"lr": 0.1})
    assert momentum(0) == momentum(1000) == 0.95


def test_the_rule_clips_lrs_outside_the_range() -> None:
    assert cycled_momentum(0.5, (0.01, 0.1)) == pytest.approx(0.85)
    assert cycled_momentum(0.0, (0.01, 0.1)) == pytest.approx(0.95)
    assert cycled_momentum(0.055, (0.01, 0.1), (0.8, 0.9)) == pytest.approx(0.85)


@pytest.mark.parametrize(
    ("base_momentum", "max_momentum", "needle"),
    [(-0.1, 0.9, "base_momentum"), (0.9, 0.8, "max_momentum"), (0.8, 1.0, "max_momentum")],
)
def test_bad_momentum_bounds_are_refused(
    base_momentum: float, max_momentum: float, needle: str
) -> None:
    with pytest.raises(ValueError, match=needle):
        momentum_schedule("triangular", TRIANGULAR, base_momentum, max_momentum)


def test_momentum_bounds_at_their_edges() -> None:
    # base_momentum may be 0, and equal to max_momentum (no cycling); neither may reach 1.
    assert momentum_schedule("triangular", TRIANGULAR, 0.0, 0.0)(40) == 0.0
    assert momentum_schedule("triangular", TRIANGULAR, 0.9, 0.9)(40) == pytest.approx(0.9)
    with pytest.raises(ValueError, match=r"base_momentum must be a number in \[0, 1\), got 1.0"):
        momentum_schedule("triangular", TRIANGULAR, 1.0, 1.0)
