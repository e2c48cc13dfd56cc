"""Learning-rate policies: pure functions ``iteration -> lr`` and the registry that names them.

Iterations are 0-based. Each policy checks its arguments and raises ValueError naming the
parameter, the value and what is allowed. The cyclic, cosine and one-cycle policies reproduce
the arithmetic of PyTorch's CyclicLR, CosineAnnealingLR and OneCycleLR, so a schedule computed
here (for plots, reports, tests) equals the one ``clr.schedulers`` drives an optimizer with.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from clr.params import Param, Registered, check_params

CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
ANNEAL_STRATEGIES = ("cos", "linear")
WSD_SHAPES = ("linear", "cosine", "1-sqrt")


# ---- argument checks -------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_iteration(iteration: Any) -> None:
    if not _is_integer(iteration) or iteration < 0:
        raise ValueError(f"iteration must be an integer >= 0, got {iteration!r}")


def _check_positive(name: str, value: Any) -> None:
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_count(name: str, value: Any) -> None:
    if not _is_integer(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_gamma(gamma: Any) -> None:
    if not _is_number(gamma) or not 0 < gamma <= 1:
        raise ValueError(f"gamma must be a finite number with 0 < gamma <= 1, got {gamma!r}")


def _check_bounds(base_lr: Any, max_lr: Any) -> None:
    _check_positive("base_lr", base_lr)
    _check_positive("max_lr", max_lr)
    if max_lr < base_lr:
        raise ValueError(f"max_lr must be >= base_lr ({base_lr!r}), got {max_lr!r}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {names}, got {value!r}")


# ---- policies --------------------------------------------------------------------------------


def fixed_lr(iteration: int, lr: float) -> float:
    """The same lr at every iteration."""
    _check_iteration(iteration)
    _check_positive("lr", lr)
    return float(lr)


def step_lr(iteration: int, lr: float, step_size: int, gamma: float = 0.1) -> float:
    """Caffe's "step": ``lr * gamma ** floor(iteration / step_size)``."""
    _check_iteration(iteration)
    _check_positive("lr", lr)
    _check_count("step_size", step_size)
    _check_gamma(gamma)
    return lr * gamma ** (iteration // step_size)


def exp_lr(iteration: int, lr: float, gamma: float) -> float:
    """Caffe's "exp": ``lr * gamma ** iteration``."""
    _check_iteration(iteration)
    _check_positive("lr", lr)
    _check_gamma(gamma)
    return lr * gamma**iteration


def decay_lr(iteration: int, base_lr: float, max_lr: float, step_size: int) -> float:
    """The paper's "decay" ablation: linear from max_lr to base_lr over step_size, then base_lr."""
    _check_iteration(iteration)
    _check_bounds(base_lr, max_lr)
    _check_count("step_size", step_size)
    return base_lr + (max_lr - base_lr) * max(0.0, 1.0 - iteration / step_size)


def cyclic_lr(
    iteration: int,
    base_lr: float,
    max_lr: float,
    step_size: int,
    mode: str = "triangular",
    gamma: float = 1.0,
    step_size_down: int | None = None,
) -> float:
    """The cyclical learning rate of Smith (2017) at `iteration`.

    Equals the lr of ``torch.optim.lr_scheduler.CyclicLR(opt, base_lr, max_lr,
    step_size_up=step_size, step_size_down=step_size_down, mode=mode, gamma=gamma,
    cycle_momentum=False)`` after `iteration` steps: the arithmetic below is torch's, which for
    ``step_size_down=None`` is the paper's ``cycle = floor(1 + it / (2 * step));
    x = |it / step - 2 * cycle + 1|; lr = base + (max - base) * max(0, 1 - x)``.
    The lr rises for `step_size` iterations and falls for `step_size_down` (default: the same).

    - triangular: the amplitude ``max_lr - base_lr`` in every cycle;
    - triangular2: the amplitude halved each cycle (divided by ``2 ** (cycle - 1)``);
    - exp_range: the amplitude times ``gamma ** iteration``. The paper's text ("boundary values
      decline by an exponential factor of gamma**iteration") can be read as shrinking max_lr
      only or both bounds; this is PyTorch's and the original Keras callback's (bckenstler/CLR)
      reading, so base_lr stays fixed and only the amplitude decays.
    """
    _check_iteration(iteration)
    _check_bounds(base_lr, max_lr)
    _check_count("step_size", step_size)
    if step_size_down is not None:
        _check_count("step_size_down", step_size_down)
    _check_choice("mode", mode, CYCLIC_MODES)
    _check_gamma(gamma)
    up = float(step_size)
    down = float(step_size_down) if step_size_down is not None else up
    total_size = up + down
    step_ratio = up / total_size
    cycle = math.floor(1 + iteration / total_size)
    x = 1.0 + iteration / total_size - cycle  # position within the cycle, in [0, 1)
    scale_factor = x / step_ratio if x <= step_ratio else (x - 1) / (step_ratio - 1)
    if mode == "triangular":
        scale = 1.0
    elif mode == "triangular2":
        scale = 1 / (2.0 ** (cycle - 1))
    else:
        scale = gamma**iteration
    return base_lr + (max_lr - base_lr) * scale_factor * scale


def triangular(
    iteration: int,
    base_lr: float,
    max_lr: float,
    step_size: int,
    step_size_down: int | None = None,
) -> float:
    """The triangular cyclical policy (see `cyclic_lr`)."""
    return cyclic_lr(iteration, base_lr, max_lr, step_size, "triangular", 1.0, step_size_down)


def triangular2(
    iteration: int,
    base_lr: float,
    max_lr: float,
    step_size: int,
    step_size_down: int | None = None,
) -> float:
    """The triangular cyclical policy with the amplitude halved each cycle (see `cyclic_lr`)."""
    return cyclic_lr(iteration, base_lr, max_lr, step_size, "triangular2", 1.0, step_size_down)


def exp_range(
    iteration: int,
    base_lr: float,
    max_lr: float,
    step_size: int,
    gamma: float,
    step_size_down: int | None = None,
) -> float:
    """The triangular cyclical policy with the amplitude times gamma**iteration (`cyclic_lr`)."""
    return cyclic_lr(iteration, base_lr, max_lr, step_size, "exp_range", gamma, step_size_down)


def cosine_lr(iteration: int, base_lr: float, max_lr: float, total_iterations: int) -> float:
    """max_lr annealed to base_lr by a half cosine over total_iterations, then base_lr.

    Equals ``CosineAnnealingLR(T_max=total_iterations, eta_min=base_lr)`` started at max_lr for
    iteration <= total_iterations (torch's cosine climbs back up after T_max; this one holds).
    """
    _check_iteration(iteration)
    _check_bounds(base_lr, max_lr)
    _check_count("total_iterations", total_iterations)
    if iteration >= total_iterations:
        return float(base_lr)
    return base_lr + (max_lr - base_lr) * (1 + math.cos(math.pi * iteration / total_iterations)) / 2


def one_cycle_lr(
    iteration: int,
    max_lr: float,
    total_iterations: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal_strategy: str = "cos",
    three_phase: bool = False,
) -> float:
    """The 1cycle policy (Smith & Topin 2017): equals torch's OneCycleLR(total_steps=...).

    Warm up from ``max_lr / div_factor`` to max_lr over the first `pct_start` of the budget,
    then anneal to ``max_lr / div_factor / final_div_factor`` (with `three_phase`, back to the
    initial lr first, symmetrically, then to the minimum). Equal to torch for
    iteration < total_iterations; after that the last value is held (torch raises).
    """
    _check_iteration(iteration)
    _check_positive("max_lr", max_lr)
    _check_count("total_iterations", total_iterations)
    if not _is_number(pct_start) or not 0 <= pct_start <= 1:
        raise ValueError(f"pct_start must be a number in [0, 1], got {pct_start!r}")
    _check_positive("div_factor", div_factor)
    _check_positive("final_div_factor", final_div_factor)
    _check_choice("anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES)
    if not isinstance(three_phase, bool):
        raise ValueError(f"three_phase must be true or false, got {three_phase!r}")
    warmup_end = float(pct_start * total_iterations) - 1
    if warmup_end == 0:
        # torch divides by the warm-up's length at iteration 0 and fails (ZeroDivisionError).
        raise ValueError(
            f"pct_start * total_iterations must not be 1 (a warm-up of zero length), "
            f"got pct_start={pct_start!r}, total_iterations={total_iterations!r}"
        )
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    # (end_step, start_lr, end_lr) per phase, as OneCycleLR's _schedule_phases.
    phases: list[tuple[float, float, float]]
    if three_phase:
        phases = [
            (warmup_end, initial_lr, max_lr),
            (float(2 * pct_start * total_iterations) - 2, max_lr, initial_lr),
            (total_iterations - 1, initial_lr, min_lr),
        ]
    else:
        phases = [(warmup_end, initial_lr, max_lr), (total_iterations - 1, max_lr, min_lr)]
    step = min(iteration, total_iterations - 1)
    index, start_step = 0, 0.0
    while index < len(phases) - 1 and step > phases[index][0]:
        start_step = phases[index][0]
        index += 1
    end_step, start, end = phases[index]
    pct = (step - start_step) / (end_step - start_step)
    if anneal_strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def wsd_lr(
    iteration: int,
    lr: float,
    total_iterations: int,
    warmup: int = 0,
    decay_fraction: float = 0.2,
    decay_shape: str = "1-sqrt",
    min_lr_ratio: float = 0.0,
) -> float:
    """Warmup-stable-decay (Hägele et al. 2024, arXiv 2405.18392).

    1. warm-up: linear from 0 to lr over `warmup` iterations (``lr * it / warmup``);
    2. stable: lr until the decay starts;
    3. decay: over the last ``round(decay_fraction * total_iterations)`` iterations (half up),
       ``lr * (m + (1 - m) * shape(p))`` with ``m = min_lr_ratio``, p the share of the decay
       done and shape ``1 - p`` (linear), ``(1 + cos(pi p)) / 2`` (cosine) or ``1 - sqrt(p)``;
    4. from total_iterations on: ``lr * min_lr_ratio``.

    Equals pytorch-optimizer's ``get_wsd_schedule`` (num_cycles 0.5) times lr; that one
    applies min_lr_ratio only to the cosine decay and the tail, this one to every shape, so
    the decay ends where the tail starts.
    """
    _check_iteration(iteration)
    _check_positive("lr", lr)
    _check_count("total_iterations", total_iterations)
    if not _is_integer(warmup) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    if not _is_number(decay_fraction) or not 0 <= decay_fraction <= 1:
        raise ValueError(f"decay_fraction must be a number in [0, 1], got {decay_fraction!r}")
    _check_choice("decay_shape", decay_shape, WSD_SHAPES)
    if not _is_number(min_lr_ratio) or not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio must be a number in [0, 1], got {min_lr_ratio!r}")
    decay = math.floor(decay_fraction * total_iterations + 0.5)
    if warmup + decay > total_iterations:
        raise ValueError(
            f"warmup ({warmup}) plus the decay ({decay} iterations: decay_fraction "
            f"{decay_fraction!r} of {total_iterations}) must fit in total_iterations "
            f"({total_iterations})"
        )
    decay_start = total_iterations - decay
    if iteration < warmup:
        return lr * iteration / warmup
    if iteration < decay_start:
        return float(lr)
    if iteration >= total_iterations:
        return lr * min_lr_ratio
    done = (iteration - decay_start) / decay
    if decay_shape == "linear":
        shape = 1.0 - done
    elif decay_shape == "cosine":
        shape = (1.0 + math.cos(math.pi * done)) / 2
    else:
        shape = 1.0 - math.sqrt(done)
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * shape)


# ---- registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy(Registered):
    """A named policy: its function, declared parameters and a one-line summary."""

    name: str
    function: Callable[..., float]
    params: tuple[Param, ...]
    summary: str

    def tunable(self) -> list[str]:
        """Parameters a tuned arm may search: the numbers other than the budget."""
        return [p.name for p in self.params if p.type in ("float", "int") and p.source != "budget"]

    def describe(self) -> dict[str, Any]:
        """The catalog's entry, each parameter saying whether a tuned arm may search it."""
        described = super().describe()
        tunable = set(self.tunable())
        for param in described["params"]:
            param["tunable"] = param["name"] in tunable
        return described


_LR = Param("lr", "float", source="bounds", help="learning rate (> 0)")
_BASE_LR = Param("base_lr", "float", source="bounds", help="lower bound of the lr (> 0)")
_MAX_LR = Param("max_lr", "float", source="bounds", help="upper bound of the lr (>= base_lr)")
_STEP_SIZE = Param("step_size", "int", help="iterations per half cycle (>= 1)")
_STEP_SIZE_DOWN = Param(
    "step_size_down",
    "int",
    default=None,
    help="iterations of the falling half of a cycle (>= 1); default: step_size",
)
_TOTAL = Param(
    "total_iterations", "int", source="budget", help="iterations of the whole schedule (>= 1)"
)
_CYCLIC_PARAMS = (_BASE_LR, _MAX_LR, _STEP_SIZE, _STEP_SIZE_DOWN)

POLICIES: Mapping[str, Policy] = MappingProxyType(
    {
        p.name: p
        for p in (
            Policy("fixed", fixed_lr, (_LR,), "the same lr throughout"),
            Policy(
                "step",
                step_lr,
                (
                    _LR,
                    Param("step_size", "int", help="iterations between drops (>= 1)"),
                    Param("gamma", "float", default=0.1, help="factor per drop (0 < gamma <= 1)"),
                ),
                "lr times gamma every step_size iterations (Caffe's step)",
            ),
            Policy(
                "exp",
                exp_lr,
                (_LR, Param("gamma", "float", help="factor per iteration (0 < gamma <= 1)")),
                "lr times gamma**iteration (Caffe's exp)",
            ),
            Policy(
                "decay",
                decay_lr,
                (_BASE_LR, _MAX_LR, Param("step_size", "int", help="iterations of the decay")),
                "linear from max_lr down to base_lr over step_size iterations, then base_lr",
            ),
            Policy(
                "triangular",
                triangular,
                _CYCLIC_PARAMS,
                "cyclical: linear up from base_lr to max_lr and back down, every cycle alike",
            ),
            Policy(
                "triangular2",
                triangular2,
                _CYCLIC_PARAMS,
                "cyclical: triangular with the amplitude halved each cycle",
            ),
            Policy(
                "exp_range",
                exp_range,
                (
                    _BASE_LR,
                    _MAX_LR,
                    _STEP_SIZE,
                    Param("gamma", "float", help="amplitude factor per iteration (0 < g <= 1)"),
                    _STEP_SIZE_DOWN,
                ),
                "cyclical: triangular with the amplitude times gamma**iteration",
            ),
            Policy(
                "cosine",
                cosine_lr,
                (_BASE_LR, _MAX_LR, _TOTAL),
                "half cosine from max_lr down to base_lr over total_iterations",
            ),
            Policy(
                "one_cycle",
                one_cycle_lr,
                (
                    _MAX_LR,
                    _TOTAL,
                    Param("pct_start", "float", default=0.3, help="share of the warm-up, [0, 1]"),
                    Param("div_factor", "float", default=25.0, help="initial lr = max_lr / this"),
                    Param(
                        "final_div_factor",
                        "float",
                        default=1e4,
                        help="final lr = initial lr / this",
                    ),
                    Param(
                        "anneal_strategy",
                        "str",
                        default="cos",
                        choices=ANNEAL_STRATEGIES,
                        help="shape of the ramps",
                    ),
                    Param(
                        "three_phase",
                        "bool",
                        default=False,
                        help="anneal back to the initial lr before the final decay",
                    ),
                ),
                "1cycle: one warm-up to max_lr, then annealing far below the start",
            ),
            Policy(
                "wsd",
                wsd_lr,
                (
                    _LR,
                    _TOTAL,
                    Param("warmup", "int", default=0, help="iterations of the warm-up from 0"),
                    Param(
                        "decay_fraction",
                        "float",
                        default=0.2,
                        help="share of total_iterations spent decaying at the end, [0, 1]",
                    ),
                    Param(
                        "decay_shape",
                        "str",
                        default="1-sqrt",
                        choices=WSD_SHAPES,
                        help="shape of the decay (1-sqrt: Hägele et al. 2024's best)",
                    ),
                    Param(
                        "min_lr_ratio",
                        "float",
                        default=0.0,
                        help="lr at the end of the decay, as a share of lr, [0, 1]",
                    ),
                ),
                "warmup-stable-decay: warm up, hold lr, then a short decay at the end",
            ),
        )
    }
)


def get_policy(name: str) -> Policy:
    """The registered policy called `name`."""
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        known = ", ".join(POLICIES)
        raise ValueError(f"policy must be one of {known}, got {name!r}") from None


def check_policy_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` checked against policy `name`'s declaration, completed with defaults.

    Values must be concrete: "auto" bounds and a missing budget are the runner's to fill first.
    A None given for a parameter whose default is None means that default.
    """
    policy = get_policy(name)
    nullable = {p.name for p in policy.params if p.default is None}
    for key, value in params.items():
        if isinstance(value, str) and value == "auto":
            raise ValueError(
                f"policy {name}.{key} is 'auto': resolve it (e.g. from the range test's "
                "bounds) before building a schedule"
            )
    given = {k: v for k, v in params.items() if not (v is None and k in nullable)}
    return check_params(f"policy {name}", policy.params, given)


def make_schedule(name: str, params: Mapping[str, Any]) -> Callable[[int], float]:
    """The schedule ``iteration -> lr`` of policy `name` with `params`, checked eagerly.

    Returns a picklable ``functools.partial`` (trials may ship it to Ray workers).
    """
    checked = check_policy_params(name, params)
    function = get_policy(name).function
    function(0, **checked)  # raises now, not mid-training, on out-of-range values
    return functools.partial(function, **checked)
