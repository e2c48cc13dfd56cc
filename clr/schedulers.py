"""Drive a torch optimizer's learning rate (and optionally momentum) by a registry policy.

Schedulers here are stepped once per iteration: right after `build_scheduler` every param
group's lr is ``policy(0)``; after k ``.step()`` calls it is ``policy(k)``. Every param group
follows the same policy. PyTorch's own schedulers are used where they implement the policy
and the momentum stays as it is; a cycled momentum always follows `clr.momentum`'s rule,
through `PolicyLR`, the one the training engine in `workers` follows too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CyclicLR,
    ExponentialLR,
    LRScheduler,
    OneCycleLR,
    StepLR,
)

from clr.momentum import (
    BASE_MOMENTUM,
    MAX_MOMENTUM,
    check_momentum_bounds,
    cycled_momentum,
    lr_range,
)
from clr.policies import check_policy_params, get_policy, make_schedule


class PolicyLR(LRScheduler):
    """Sets the lr to a registry policy's closed form at each iteration.

    Used where torch has no scheduler for the policy (fixed, decay) and for every policy
    whose momentum is cycled. The state holds the policy's name and parameters, not a
    function, so `state_dict()` stays plain data that a checkpoint can store.
    With `momentum` = (base_momentum, max_momentum), momentum moves inversely to the lr:
    max_momentum at the policy's lowest lr, base_momentum at its highest
    (`clr.momentum.cycled_momentum`).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        name: str,
        params: Mapping[str, Any],
        *,
        momentum: tuple[float, float] | None = None,
        last_epoch: int = -1,
    ) -> None:
        self.policy_name = name
        self.params = check_policy_params(name, params)
        make_schedule(name, self.params)  # range checks before touching the optimizer
        if momentum is not None:
            _check_momentum(optimizer, *momentum)
        self.momentum = momentum
        self.lr_range = lr_range(name, self.params)
        self.use_beta1 = momentum is not None and _uses_beta1(optimizer)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        """The policy's lr at `last_epoch` for every group; sets momentum when cycling it."""
        lr = get_policy(self.policy_name).function(self.last_epoch, **self.params)
        if self.momentum is not None:
            momentum = cycled_momentum(lr, self.lr_range, self.momentum)
            for group in self.optimizer.param_groups:
                _set_momentum(group, momentum, self.use_beta1)
        return [lr for _ in self.optimizer.param_groups]


class _HeldCosineLR(CosineAnnealingLR):
    """CosineAnnealingLR that holds eta_min after T_max.

    torch's cosine keeps going (back up towards the initial lr) after T_max, while the cosine
    policy ends at base_lr; a trial stepping past its budget must stay there.
    """

    def get_lr(self) -> list[float | Tensor]:
        """torch's recursive cosine up to T_max, then eta_min."""
        if self.last_epoch > self.T_max:
            return [self.eta_min for _ in self.optimizer.param_groups]
        return super().get_lr()


class _HeldOneCycleLR(OneCycleLR):
    """OneCycleLR that holds its last lr from total_steps - 1 on.

    torch extrapolates the last phase at total_steps and raises beyond it; the policy holds
    its final value, and the usual loop's last `scheduler.step()` lands on total_steps.
    """

    def get_lr(self) -> list[float | Tensor]:
        """torch's 1cycle up to total_steps - 1, then the lr reached there."""
        if self.last_epoch >= self.total_steps:
            return [group["lr"] for group in self.optimizer.param_groups]
        return super().get_lr()


def build_scheduler(
    optimizer: Optimizer,
    name: str,
    params: Mapping[str, Any],
    *,
    cycle_momentum: bool = False,
    base_momentum: float = BASE_MOMENTUM,
    max_momentum: float = MAX_MOMENTUM,
) -> LRScheduler:
    """A scheduler that sets `optimizer`'s lr to policy `name` with `params`, once per iteration.

    With `cycle_momentum`, momentum (SGD's ``momentum``, Adam's ``betas[0]``) moves inversely
    to the lr between max_momentum (lowest lr) and base_momentum (highest lr), linear in the
    lr (`clr.momentum`); torch's CyclicLR and OneCycleLR then leave the momentum alone.
    Checkpoints: build the scheduler anew, then load the optimizer's and the scheduler's
    state dicts; the sequence continues where it stopped.
    """
    checked = check_policy_params(name, params)
    make_schedule(name, checked)  # range checks before touching the optimizer
    if cycle_momentum:
        _check_momentum(optimizer, base_momentum, max_momentum)
        return PolicyLR(optimizer, name, checked, momentum=(base_momentum, max_momentum))
    if name in ("triangular", "triangular2", "exp_range"):
        return CyclicLR(
            optimizer,
            base_lr=checked["base_lr"],
            max_lr=checked["max_lr"],
            step_size_up=checked["step_size"],
            step_size_down=checked["step_size_down"],
            mode=name,  # type: ignore[arg-type]  # the registry names are CyclicLR's modes
            gamma=checked.get("gamma", 1.0),
            cycle_momentum=False,
        )
    if name == "one_cycle":
        return _HeldOneCycleLR(
            optimizer,
            max_lr=checked["max_lr"],
            total_steps=checked["total_iterations"],
            pct_start=checked["pct_start"],
            anneal_strategy=checked["anneal_strategy"],
            div_factor=checked["div_factor"],
            final_div_factor=checked["final_div_factor"],
            three_phase=checked["three_phase"],
            cycle_momentum=False,
        )
    if name == "step":
        _start_at(optimizer, checked["lr"])
        return StepLR(optimizer, step_size=checked["step_size"], gamma=checked["gamma"])
    if name == "exp":
        _start_at(optimizer, checked["lr"])
        return ExponentialLR(optimizer, gamma=checked["gamma"])
    if name == "cosine":
        _start_at(optimizer, checked["max_lr"])
        return _HeldCosineLR(
            optimizer, T_max=checked["total_iterations"], eta_min=checked["base_lr"]
        )
    return PolicyLR(optimizer, name, checked)


def _start_at(optimizer: Optimizer, lr: float) -> None:
    # torch's schedulers start from group["initial_lr"] and keep one already there (left by
    # an earlier scheduler on the same optimizer), so both are set.
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["initial_lr"] = lr


def _uses_beta1(optimizer: Optimizer) -> bool:
    return "betas" in optimizer.defaults


def _set_momentum(group: dict[str, Any], momentum: float, use_beta1: bool) -> None:
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


def _check_momentum(optimizer: Optimizer, base_momentum: float, max_momentum: float) -> None:
    if "momentum" not in optimizer.defaults and not _uses_beta1(optimizer):
        raise ValueError(
            f"cycle_momentum needs an optimizer with momentum (SGD, RMSprop) or betas "
            f"(Adam family), got {type(optimizer).__name__}"
        )
    check_momentum_bounds(base_momentum, max_momentum)
