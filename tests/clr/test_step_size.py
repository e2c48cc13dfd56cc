"""Step-size helper: 2-10 epochs per half cycle, budgets that end at a cycle's end."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clr.step_size import StepSizeChoice, choose_step_size, step_size_for


@pytest.mark.parametrize(
    ("iterations_per_epoch", "k", "expected"),
    [(100, 2, 200), (100, 10, 1000), (391, 4, 1564), (45, 2.5, 112), (7, 3.3, 23)],
)
def test_step_size_for_is_k_epochs(iterations_per_epoch: int, k: float, expected: int) -> None:
    assert step_size_for(iterations_per_epoch, k) == expected


@pytest.mark.parametrize(
    ("iterations_per_epoch", "k", "needle"),
    [(100, 1.5, "k"), (100, 11, "k"), (0, 4, "iterations_per_epoch"), (2.5, 4, "2.5")],
)
def test_step_size_for_refuses(iterations_per_epoch: int, k: float, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        step_size_for(iterations_per_epoch, k)


@pytest.mark.parametrize(
    ("iterations_per_epoch", "budget", "min_cycles", "expected"),
    [
        # 10 epochs per half cycle, 6 cycles of 2000 iterations.
        (100, 12_000, 3, StepSizeChoice(1000, 10.0, 6)),
        # 10 epochs would give 2 cycles only; 5 epochs give 4.
        (100, 4_000, 3, StepSizeChoice(500, 5.0, 4)),
        (100, 4_000, 2, StepSizeChoice(1000, 10.0, 2)),
        # No whole number of epochs fits: 410 iterations is 4.1 epochs.
        (100, 4_100, 3, StepSizeChoice(410, 4.1, 5)),
        # The paper's CIFAR-10 setup: batch 100 on 50,000 images, 70,000 iterations.
        (500, 70_000, 3, StepSizeChoice(5000, 10.0, 7)),
    ],
)
def test_choose_step_size_examples(
    iterations_per_epoch: int, budget: int, min_cycles: int, expected: StepSizeChoice
) -> None:
    assert choose_step_size(iterations_per_epoch, budget, min_cycles=min_cycles) == expected


@settings(max_examples=100)
@given(
    st.integers(1, 300),
    st.integers(1, 200_000) | st.integers(1, 3000).map(lambda n: 120 * n),  # many divisors
    st.integers(1, 5),
)
def test_choice_ends_the_budget_at_a_cycle_end(
    iterations_per_epoch: int, budget: int, min_cycles: int
) -> None:
    try:
        choice = choose_step_size(iterations_per_epoch, budget, min_cycles=min_cycles)
    except ValueError as error:
        assert str(budget) in str(error)
        return
    assert 2 * iterations_per_epoch <= choice.step_size <= 10 * iterations_per_epoch
    assert choice.cycles * 2 * choice.step_size == budget
    assert choice.cycles >= min_cycles
    assert choice.k == choice.step_size / iterations_per_epoch
    # No longer step size would also fit.
    for longer in range(choice.step_size + 1, 10 * iterations_per_epoch + 1):
        assert budget % (2 * longer) != 0 or budget // (2 * longer) < min_cycles


def test_too_small_budget_names_the_smallest_that_works() -> None:
    # 3 cycles of at least 2 * 200 iterations: 1,200.
    with pytest.raises(ValueError, match=r"budget=1000 is too small.*1200") as info:
        choose_step_size(100, 1000)
    choose_step_size(100, 1200)
    assert "200-1000" in str(info.value)


def test_budget_without_a_fitting_step_names_the_nearest_that_work() -> None:
    with pytest.raises(ValueError, match=r"budget=10001 fits no allowed step size.*10000 or 10008"):
        choose_step_size(100, 10_001)
    for budget in (10_000, 10_008):
        choice = choose_step_size(100, budget)
        assert choice.cycles * 2 * choice.step_size == budget


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"iterations_per_epoch": 0, "budget": 100}, "iterations_per_epoch"),
        ({"iterations_per_epoch": 10, "budget": -5}, "budget"),
        ({"iterations_per_epoch": 10, "budget": 1000, "min_cycles": 0}, "min_cycles"),
    ],
)
def test_choose_step_size_refuses_bad_arguments(kwargs: dict[str, int], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        choose_step_size(**kwargs)
