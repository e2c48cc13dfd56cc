"""Choosing a cyclical policy's step size (half a cycle, in iterations).

The paper: a step size of 2-10 epochs of iterations works, and training should stop at the
end of a cycle, where the lr is lowest.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_EPOCHS_PER_STEP = 2
MAX_EPOCHS_PER_STEP = 10


@dataclass(frozen=True)
class StepSizeChoice:
    """A step size (iterations per half cycle), as epochs (k) and the whole cycles it gives."""

    step_size: int
    k: float
    cycles: int


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def step_size_for(iterations_per_epoch: int, k: float) -> int:
    """The step size of `k` epochs: ``round(k * iterations_per_epoch)``, k in [2, 10]."""
    _check_count("iterations_per_epoch", iterations_per_epoch)
    if (
        isinstance(k, bool)
        or not isinstance(k, (int, float))
        or not MIN_EPOCHS_PER_STEP <= k <= MAX_EPOCHS_PER_STEP
    ):
        raise ValueError(
            f"k must be a number of epochs in [{MIN_EPOCHS_PER_STEP}, {MAX_EPOCHS_PER_STEP}], "
            f"got {k!r}"
        )
    return round(k * iterations_per_epoch)


def choose_step_size(
    iterations_per_epoch: int, budget: int, *, min_cycles: int = 3
) -> StepSizeChoice:
    """The longest step size of 2-10 epochs for which `budget` ends at a cycle's end.

    `budget` (iterations) must be a multiple of ``2 * step_size`` giving at least `min_cycles`
    whole cycles; the largest such step size (fewest, longest cycles) wins. k need not be a
    whole number of epochs. Raises ValueError with the nearest budgets that would work.
    """
    _check_count("iterations_per_epoch", iterations_per_epoch)
    _check_count("budget", budget)
    _check_count("min_cycles", min_cycles)
    lowest = MIN_EPOCHS_PER_STEP * iterations_per_epoch
    highest = MAX_EPOCHS_PER_STEP * iterations_per_epoch
    for step_size in range(highest, lowest - 1, -1):
        cycles, rest = divmod(budget, 2 * step_size)
        if rest == 0 and cycles >= min_cycles:
            return StepSizeChoice(step_size, step_size / iterations_per_epoch, cycles)
    # Budgets that work are whole numbers (>= min_cycles) of cycles of some allowed length.
    below = max(
        (
            budget // (2 * s) * 2 * s
            for s in range(lowest, highest + 1)
            if budget // (2 * s) >= min_cycles
        ),
        default=None,
    )
    above = min(max(-(-budget // (2 * s)), min_cycles) * 2 * s for s in range(lowest, highest + 1))
    nearest = f"{below} or {above}" if below is not None else f"{above} (the smallest)"
    reason = "is too small" if below is None else "fits no allowed step size"
    raise ValueError(
        f"budget={budget} {reason}: it must be a whole number (>= {min_cycles}) of cycles of "
        f"2 * step_size, with step_size {lowest}-{highest} iterations "
        f"({MIN_EPOCHS_PER_STEP}-{MAX_EPOCHS_PER_STEP} epochs of {iterations_per_epoch}); "
        f"nearest budgets that work: {nearest}"
    )
