"""Optimizers an arm can use: the paper's Table 3 set (SGD, Nesterov, Adam, RMSprop, AdaGrad,
AdaDelta) plus AdamW.

``build_optimizer(name, options, params, lr=...)`` checks the options against the entry's
declared parameters and returns the torch optimizer. The learning rate always comes from the
arm's policy, never from the options; the policy sets it again before every step. Option
names are torch's keyword names, except Adam's ``betas``, split into ``beta1``/``beta2``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from clr.params import Param, Registered, check_params

OptimizerBuilder = Callable[[Iterable[Any], float, dict[str, Any]], torch.optim.Optimizer]


@dataclass(frozen=True)
class OptimizerEntry(Registered):
    """One optimizer of the registry: its declared options and the function that builds it."""

    name: str
    params: tuple[Param, ...]
    summary: str
    build: OptimizerBuilder


# Ranges torch would also refuse, checked here so the message names our option.
_AT_LEAST_ZERO = frozenset(
    {"momentum", "weight_decay", "lr_decay", "initial_accumulator_value", "dampening"}
)
_ABOVE_ZERO = frozenset({"eps"})
_UNIT_INTERVAL = frozenset({"beta1", "beta2", "alpha", "rho"})  # [0, 1)


def _check_ranges(owner: str, options: dict[str, Any]) -> None:
    for key, value in options.items():
        if key in _AT_LEAST_ZERO and value < 0:
            raise ValueError(f"{owner}.{key} must be >= 0, got {value}")
        if key in _ABOVE_ZERO and value <= 0:
            raise ValueError(f"{owner}.{key} must be > 0, got {value}")
        if key in _UNIT_INTERVAL and not 0 <= value < 1:
            raise ValueError(f"{owner}.{key} must be in [0, 1), got {value}")


def _sgd(params: Iterable[Any], lr: float, options: dict[str, Any]) -> torch.optim.Optimizer:
    if options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
        raise ValueError(
            f"sgd.nesterov needs momentum > 0 and dampening 0, got momentum "
            f"{options['momentum']} and dampening {options['dampening']}"
        )
    return torch.optim.SGD(params, lr=lr, **options)


def _nesterov(params: Iterable[Any], lr: float, options: dict[str, Any]) -> torch.optim.Optimizer:
    if options["momentum"] <= 0:
        raise ValueError(f"nesterov.momentum must be > 0, got {options['momentum']}")
    return torch.optim.SGD(params, lr=lr, nesterov=True, **options)


def _torch(kind: Callable[..., torch.optim.Optimizer]) -> OptimizerBuilder:
    """Builder passing the options as keywords, ``beta1``/``beta2`` joined into ``betas``."""

    def build(params: Iterable[Any], lr: float, options: dict[str, Any]) -> torch.optim.Optimizer:
        kwargs = {k: v for k, v in options.items() if k not in ("beta1", "beta2")}
        if "beta1" in options:
            kwargs["betas"] = (options["beta1"], options["beta2"])
        return kind(params, lr=lr, **kwargs)

    return build


def _weight_decay(default: float = 0.0) -> Param:
    return Param("weight_decay", "float", default, "L2 penalty (decoupled for adamw)")


def _adam_params(weight_decay: float) -> tuple[Param, ...]:
    return (
        Param("beta1", "float", 0.9, "decay of the running mean of gradients"),
        Param("beta2", "float", 0.999, "decay of the running mean of squared gradients"),
        Param("eps", "float", 1e-8, "added to the denominator for stability"),
        _weight_decay(weight_decay),
        Param("amsgrad", "bool", False, "use the AMSGrad variant"),
    )


_MOMENTUM = Param("momentum", "float", 0.9, "momentum factor")

OPTIMIZERS: Mapping[str, OptimizerEntry] = MappingProxyType(
    {
        entry.name: entry
        for entry in (
            OptimizerEntry(
                "sgd",
                (
                    _MOMENTUM,
                    Param("dampening", "float", 0.0, "dampening of momentum"),
                    Param("nesterov", "bool", False, "Nesterov momentum (needs momentum > 0)"),
                    _weight_decay(),
                ),
                "stochastic gradient descent with momentum (the paper's default)",
                _sgd,
            ),
            OptimizerEntry(
                "nesterov",
                (_MOMENTUM, _weight_decay()),
                "SGD with Nesterov momentum (a Table 3 optimizer of its own)",
                _nesterov,
            ),
            OptimizerEntry("adam", _adam_params(0.0), "Adam", _torch(torch.optim.Adam)),
            OptimizerEntry(
                "adamw",
                _adam_params(0.01),
                "Adam with decoupled weight decay",
                _torch(torch.optim.AdamW),
            ),
            OptimizerEntry(
                "rmsprop",
                (
                    Param("alpha", "float", 0.99, "decay of the running mean of squared grads"),
                    Param("eps", "float", 1e-8, "added to the denominator for stability"),
                    Param("momentum", "float", 0.0, "momentum factor"),
                    Param("centered", "bool", False, "normalise by the gradient's variance"),
                    _weight_decay(),
                ),
                "RMSprop",
                _torch(torch.optim.RMSprop),
            ),
            OptimizerEntry(
                "adagrad",
                (
                    Param("lr_decay", "float", 0.0, "per-step decay of the effective LR"),
                    Param("initial_accumulator_value", "float", 0.0, "starting sum of squares"),
                    Param("eps", "float", 1e-10, "added to the denominator for stability"),
                    _weight_decay(),
                ),
                "AdaGrad",
                _torch(torch.optim.Adagrad),
            ),
            OptimizerEntry(
                "adadelta",
                (
                    Param("rho", "float", 0.9, "decay of the running means"),
                    Param("eps", "float", 1e-6, "added to the denominator for stability"),
                    _weight_decay(),
                ),
                "AdaDelta (torch's lr scales its update; 1.0 is the original algorithm)",
                _torch(torch.optim.Adadelta),
            ),
        )
    }
)


def build_optimizer(
    name: str, options: Mapping[str, Any], params: Iterable[Any], *, lr: float
) -> torch.optim.Optimizer:
    """Build optimizer `name` over `params` with starting learning rate `lr`."""
    entry = OPTIMIZERS.get(name)
    if entry is None:
        raise ValueError(f"unknown optimizer {name!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    if not lr >= 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    checked = check_params(name, entry.params, options)
    _check_ranges(name, checked)
    return entry.build(params, lr, checked)
