"""Optimizers an arm can use: the paper's Table 3 set (SGD, Nesterov, Adam, RMSprop, AdaGrad,
AdaDelta), AdamW, and the methods that replaced LR tuning since: schedule-free SGD/AdamW
(`schedulefree`), Prodigy (`prodigyopt`), D-Adaptation (`dadaptation`) and DoG/LDoG
(`dog-optimizer`), each taken from its own package.

``build_optimizer(name, options, params, lr=...)`` checks the options against the entry's
declared parameters and returns the torch optimizer. The learning rate always comes from the
arm's policy, never from the options; the policy sets it again before every step. Option
names are the classes' keyword names, except ``betas``, split into ``beta1``/``beta2``.

Each entry's `Stepping` says how its package's README asks it to be driven, and the engine
follows it: schedule-free ones switch ``optimizer.train()``/``.eval()`` around evaluations and
checkpoints; for Prodigy, D-Adaptation and DoG the policy's lr multiplies a step size they
estimate (recorded at every evaluation); DoG is evaluated on averaged weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import dadaptation
import dog
import prodigyopt
import schedulefree
import torch

from clr.params import Param, Registered, check_params

OptimizerBuilder = Callable[[Iterable[Any], float, dict[str, Any]], torch.optim.Optimizer]
StepSizeReader = Callable[[torch.optim.Optimizer], float | None]


@dataclass(frozen=True)
class Stepping:
    """How the engine drives an optimizer, as its package's README asks."""

    # optimizer.train() before training steps, .eval() before evaluations and checkpoints.
    schedule_free: bool = False
    # lr multiplies a step size the optimizer estimates: no range test, and `step_size`
    # reads the estimate at every evaluation.
    parameter_free: bool = False
    # Evaluate the weights of a PolynomialDecayAverager stepped after every update (DoG).
    averaged: bool = False
    step_size: StepSizeReader | None = None


PLAIN = Stepping()


@dataclass(frozen=True)
class OptimizerEntry(Registered):
    """One optimizer of the registry: its declared options and the function that builds it."""

    name: str
    params: tuple[Param, ...]
    summary: str
    build: OptimizerBuilder
    # Elementwise update: an arm's seeds could train as one stacked model. Those that
    # reduce over whole tensors or the whole model (DoG, Prodigy, D-Adaptation) are not.
    batchable: bool = True
    stepping: Stepping = PLAIN

    def describe(self) -> dict[str, Any]:
        """The catalog's entry, with how the optimizer is stepped."""
        return {
            **super().describe(),
            "batchable": self.batchable,
            "schedule_free": self.stepping.schedule_free,
            "parameter_free": self.stepping.parameter_free,
            "averaged": self.stepping.averaged,
        }


# Ranges torch would also refuse, checked here so the message names our option.
_AT_LEAST_ZERO = frozenset(
    {
        "momentum",
        "weight_decay",
        "lr_decay",
        "initial_accumulator_value",
        "dampening",
        "warmup_steps",
        "r",
        "weight_lr_power",
    }
)
_ABOVE_ZERO = frozenset({"eps", "d0", "d_coef", "reps_rel"})
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


def _schedule_free_sgd(
    params: Iterable[Any], lr: float, options: dict[str, Any]
) -> torch.optim.Optimizer:
    if not 0 < options["momentum"] < 1:
        raise ValueError(f"sgd_schedulefree.momentum must be in (0, 1), got {options['momentum']}")
    return schedulefree.SGDScheduleFree(params, lr=lr, **options)


def _positive_lr(build: OptimizerBuilder) -> OptimizerBuilder:
    """Builder for optimizers that refuse lr <= 0 when built (lr multiplies their estimate).

    A policy may start at 0 (a warm-up from zero); the engine sets the policy's lr before
    every step, so the value given at construction is never stepped with.
    """

    def positive(
        params: Iterable[Any], lr: float, options: dict[str, Any]
    ) -> torch.optim.Optimizer:
        return build(params, lr if lr > 0 else 1.0, options)

    return positive


def _estimated_d(optimizer: torch.optim.Optimizer) -> float | None:
    """Prodigy's and D-Adaptation's estimated step size d (the lr multiplies it)."""
    return float(optimizer.param_groups[0]["d"])


def _dog_step_size(optimizer: torch.optim.Optimizer) -> float | None:
    """DoG's step size per unit of lr, max distance / sqrt(sum of squared gradient norms).

    None before the first step, and for LDoG, whose step sizes are one per layer.
    """
    group = optimizer.param_groups[0]
    if "rbar" not in group or group["rbar"].numel() != 1:
        return None
    return float(group["rbar"] / torch.sqrt(group["G"]))


def _weight_decay(default: float = 0.0) -> Param:
    return Param("weight_decay", "float", default, "L2 penalty (decoupled for adamw)")


_MOMENTUM = Param("momentum", "float", 0.9, "momentum factor")
_BETAS = (
    Param("beta1", "float", 0.9, "decay of the running mean of gradients"),
    Param("beta2", "float", 0.999, "decay of the running mean of squared gradients"),
)
_EPS = Param("eps", "float", 1e-8, "added to the denominator for stability")


def _adam_params(weight_decay: float) -> tuple[Param, ...]:
    return (
        *_BETAS,
        _EPS,
        _weight_decay(weight_decay),
        Param("amsgrad", "bool", False, "use the AMSGrad variant"),
    )


_SCHEDULE_FREE = (
    Param("warmup_steps", "int", 0, "iterations of the optimizer's own linear warm-up"),
    Param("r", "float", 0.0, "power of the polynomial weighting of the average"),
    Param("weight_lr_power", "float", 2.0, "weights of the average are lr to this power"),
)
_D0 = Param("d0", "float", 1e-6, "initial estimate of the step size d")
_BIAS_CORRECTION = Param("use_bias_correction", "bool", False, "Adam's bias correction")
_DOG = (
    Param(
        "reps_rel",
        "float",
        1e-6,
        "first step's distance relative to 1 + |x0| (the package suggests 1e-4 with BatchNorm)",
    ),
    _weight_decay(),
    _EPS,
)
_SCHEDULE_FREE_STEPPING = Stepping(schedule_free=True)
_D_STEPPING = Stepping(parameter_free=True, step_size=_estimated_d)
_DOG_STEPPING = Stepping(parameter_free=True, averaged=True, step_size=_dog_step_size)

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
            OptimizerEntry(
                "sgd_schedulefree",
                (_MOMENTUM, _weight_decay(), *_SCHEDULE_FREE),
                "schedule-free SGD (Defazio et al. 2024): evaluated at its averaged iterate",
                _schedule_free_sgd,
                stepping=_SCHEDULE_FREE_STEPPING,
            ),
            OptimizerEntry(
                "adamw_schedulefree",
                (*_BETAS, _EPS, _weight_decay(), *_SCHEDULE_FREE),
                "schedule-free AdamW, AlgoPerf 2024's self-tuning winner",
                _torch(schedulefree.AdamWScheduleFree),
                stepping=_SCHEDULE_FREE_STEPPING,
            ),
            OptimizerEntry(
                "prodigy",
                (
                    *_BETAS,
                    _EPS,
                    _weight_decay(),
                    Param("decouple", "bool", True, "decoupled (AdamW-style) weight decay"),
                    _BIAS_CORRECTION,
                    Param("safeguard_warmup", "bool", False, "keep d from growing in warm-up"),
                    _D0,
                    Param("d_coef", "float", 1.0, "factor on the estimated d"),
                ),
                "Prodigy (Mishchenko & Defazio 2023): lr multiplies an estimated step size d",
                _positive_lr(_torch(prodigyopt.Prodigy)),
                batchable=False,
                stepping=_D_STEPPING,
            ),
            OptimizerEntry(
                "dadapt_sgd",
                (Param("momentum", "float", 0.0, "momentum factor"), _weight_decay(), _D0),
                "D-Adaptation SGD (Defazio & Mishchenko 2023): lr multiplies an estimated d",
                _positive_lr(_torch(dadaptation.DAdaptSGD)),
                batchable=False,
                stepping=_D_STEPPING,
            ),
            OptimizerEntry(
                "dadapt_adam",
                (
                    *_BETAS,
                    _EPS,
                    _weight_decay(),
                    Param("decouple", "bool", False, "decoupled (AdamW-style) weight decay"),
                    _BIAS_CORRECTION,
                    _D0,
                ),
                "D-Adaptation Adam: lr multiplies an estimated step size d",
                _positive_lr(_torch(dadaptation.DAdaptAdam)),
                batchable=False,
                stepping=_D_STEPPING,
            ),
            OptimizerEntry(
                "dog",
                _DOG,
                "DoG (Ivgi et al. 2023): step size from distance over gradients; lr multiplies "
                "it (1.0 recommended); evaluated on polynomial-decay averaged weights",
                _positive_lr(_torch(dog.DoG)),
                batchable=False,
                stepping=_DOG_STEPPING,
            ),
            OptimizerEntry(
                "ldog",
                _DOG,
                "layer-wise DoG: one DoG step size per tensor; evaluated on averaged weights",
                _positive_lr(_torch(dog.LDoG)),
                batchable=False,
                stepping=_DOG_STEPPING,
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
