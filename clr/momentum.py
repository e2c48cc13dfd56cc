"""Momentum cycling (Smith, arXiv 1803.09820): momentum moves inversely to the LR.

The momentum is `max_momentum` at the policy's lowest LR and `base_momentum` at its
highest, linear in the LR between them. This is the one rule: `clr.build_scheduler` and the
training engine in `workers` both take their momentum from `cycled_momentum`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from clr.policies import check_policy_params, make_schedule

BASE_MOMENTUM = 0.85  # at the highest LR
MAX_MOMENTUM = 0.95  # at the lowest LR


def lr_range(name: str, params: Mapping[str, Any]) -> tuple[float, float]:
    """The lowest and highest LR that policy `name` takes with `params`.

    A fixed LR is both ends. Step and exp decay from `lr` towards 0; one_cycle runs between
    ``max_lr / div_factor / final_div_factor`` and max_lr; the others between base_lr and max_lr.
    """
    checked = check_policy_params(name, params)
    if name == "fixed":
        return float(checked["lr"]), float(checked["lr"])
    if name in ("step", "exp"):
        return 0.0, float(checked["lr"])
    if name == "wsd":
        # Down to lr * min_lr_ratio at the end, from 0 where it warms up.
        lowest = 0.0 if checked["warmup"] else checked["lr"] * checked["min_lr_ratio"]
        return lowest, float(checked["lr"])
    if name == "one_cycle":
        initial_lr = checked["max_lr"] / checked["div_factor"]
        return initial_lr / checked["final_div_factor"], float(checked["max_lr"])
    return float(checked["base_lr"]), float(checked["max_lr"])


def check_momentum_bounds(base_momentum: float, max_momentum: float) -> None:
    if not 0 <= base_momentum < 1:
        raise ValueError(f"base_momentum must be a number in [0, 1), got {base_momentum!r}")
    if not base_momentum <= max_momentum < 1:
        raise ValueError(
            f"max_momentum must be >= base_momentum ({base_momentum!r}) and < 1, "
            f"got {max_momentum!r}"
        )


def cycled_momentum(
    lr: float,
    lrs: tuple[float, float],
    momentum: tuple[float, float] = (BASE_MOMENTUM, MAX_MOMENTUM),
) -> float:
    """The momentum at `lr`, for LRs in `lrs` = (lowest, highest) and momentum bounds
    `momentum` = (base_momentum, max_momentum); a constant LR gets max_momentum."""
    low, high = lrs
    base_momentum, max_momentum = momentum
    share = (lr - low) / (high - low) if high > low else 0.0
    return max_momentum - (max_momentum - base_momentum) * min(1.0, max(0.0, share))


def momentum_schedule(
    name: str,
    params: Mapping[str, Any],
    base_momentum: float = BASE_MOMENTUM,
    max_momentum: float = MAX_MOMENTUM,
) -> Callable[[int], float]:
    """The momentum of policy `name` as a function `iteration -> momentum`."""
    check_momentum_bounds(base_momentum, max_momentum)
    lr_at = make_schedule(name, params)
    lrs = lr_range(name, params)
    return lambda iteration: cycled_momentum(lr_at(iteration), lrs, (base_momentum, max_momentum))
