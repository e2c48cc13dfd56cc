"""LR policies: shapes, agreement with PyTorch's schedulers, validation, the registry."""

from __future__ import annotations

import inspect
import itertools
import json
import math
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CyclicLR,
    ExponentialLR,
    LRScheduler,
    OneCycleLR,
    StepLR,
)

from clr.policies import (
    POLICIES,
    cosine_lr,
    cyclic_lr,
    decay_lr,
    exp_lr,
    exp_range,
    fixed_lr,
    get_policy,
    make_schedule,
    one_cycle_lr,
    step_lr,
    triangular,
    triangular2,
    wsd_lr,
)

REL = 1e-12
lrs = st.floats(1e-5, 1.0)
ratios = st.floats(1.0, 100.0)
steps = st.integers(1, 40)
optional_steps = st.none() | steps
modes = st.sampled_from(["triangular", "triangular2", "exp_range"])
gammas = st.floats(0.5, 1.0)


def close(a: float, b: float, scale: float | None = None) -> bool:
    """Equal to REL relative to `scale` (default: the values themselves)."""
    return math.isclose(a, b, rel_tol=REL, abs_tol=REL * scale if scale is not None else 0.0)


def torch_lrs(build: Callable[[torch.optim.Optimizer], LRScheduler], lr: float, n: int) -> list:
    """lr after 0..n-1 steps of the torch scheduler `build` makes (optimizer starts at `lr`)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build(optimizer)
    out = [optimizer.param_groups[0]["lr"]]
    optimizer.step()  # torch warns when a scheduler's first step comes before its optimizer's
    for _ in range(n - 1):
        scheduler.step()
        out.append(optimizer.param_groups[0]["lr"])
    return out


# ---- agreement with torch ----------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(lrs, ratios, steps, optional_steps, modes, gammas)
def test_cyclic_lr_equals_torch_cyclic_lr(
    base: float, ratio: float, up: int, down: int | None, mode: str, gamma: float
) -> None:
    top = base * ratio
    n = 2 * (up + (down or up)) + 1
    expected = torch_lrs(
        lambda o: CyclicLR(
            o, base, top, step_size_up=up, step_size_down=down, mode=mode,  # type: ignore[arg-type]
            gamma=gamma, cycle_momentum=False,
        ),
        base,
        n,
    )  # fmt: skip
    for it, want in enumerate(expected):
        assert close(cyclic_lr(it, base, top, up, mode, gamma, down), want), it


@settings(max_examples=80, deadline=None)
@given(
    lrs,
    st.integers(1, 150),
    st.floats(0.0, 1.0),
    st.floats(1.0, 100.0),
    st.floats(1.0, 1e5),
    st.sampled_from(["cos", "linear"]),
    st.booleans(),
)
def test_one_cycle_lr_equals_torch_one_cycle_lr(
    top: float, total: int, pct: float, div: float, final_div: float, anneal: str, three: bool
) -> None:
    assume(pct * total != 1.0)  # torch divides by zero there; see the validation test
    expected = torch_lrs(
        lambda o: OneCycleLR(
            o, top, total_steps=total, pct_start=pct, div_factor=div,
            final_div_factor=final_div, anneal_strategy=anneal,  # type: ignore[arg-type]
            three_phase=three, cycle_momentum=False,
        ),
        top,
        total,
    )  # fmt: skip
    for it, want in enumerate(expected):
        got = one_cycle_lr(it, top, total, pct, div, final_div, anneal, three)
        assert close(got, want), it


@settings(max_examples=60, deadline=None)
@given(lrs, ratios, st.integers(1, 300))
def test_cosine_lr_equals_torch_cosine_annealing(base: float, ratio: float, total: int) -> None:
    top = base * ratio
    expected = torch_lrs(lambda o: CosineAnnealingLR(o, T_max=total, eta_min=base), top, total + 1)
    for it, want in enumerate(expected):
        assert close(cosine_lr(it, base, top, total), want), it


@settings(max_examples=60, deadline=None)
@given(lrs, st.integers(1, 20), st.floats(0.1, 1.0))
def test_step_lr_equals_torch_step_lr(lr: float, step_size: int, gamma: float) -> None:
    expected = torch_lrs(lambda o: StepLR(o, step_size=step_size, gamma=gamma), lr, 200)
    for it, want in enumerate(expected):
        assert close(step_lr(it, lr, step_size, gamma), want), it


@settings(max_examples=60, deadline=None)
@given(lrs, gammas)
def test_exp_lr_equals_torch_exponential_lr(lr: float, gamma: float) -> None:
    expected = torch_lrs(lambda o: ExponentialLR(o, gamma=gamma), lr, 200)
    for it, want in enumerate(expected):
        assert close(exp_lr(it, lr, gamma), want), it


# ---- shapes ------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(lrs, ratios, steps, optional_steps, modes, gammas, st.integers(0, 2000))
def test_cyclic_lr_stays_within_bounds(
    base: float, ratio: float, up: int, down: int | None, mode: str, gamma: float, it: int
) -> None:
    top = base * ratio
    lr = cyclic_lr(it, base, top, up, mode, gamma, down)
    assert base * (1 - REL) <= lr <= top * (1 + REL)


@settings(max_examples=100)
@given(lrs, ratios, steps, optional_steps, st.integers(0, 2000))
def test_triangular_repeats_every_cycle(
    base: float, ratio: float, up: int, down: int | None, it: int
) -> None:
    top = base * ratio
    period = up + (down if down is not None else up)
    assert close(
        triangular(it, base, top, up, down), triangular(it + period, base, top, up, down), top
    )


@settings(max_examples=100)
@given(lrs, ratios, steps, st.integers(1, 12))
def test_triangular2_peak_halves_each_cycle(
    base: float, ratio: float, step: int, cycle: int
) -> None:
    top = base * ratio
    peak_iteration = (cycle - 1) * 2 * step + step
    expected = base + (top - base) / 2 ** (cycle - 1)
    assert close(triangular2(peak_iteration, base, top, step), expected, top)
    assert close(triangular2(peak_iteration - step, base, top, step), base, top)


@settings(max_examples=100)
@given(lrs, ratios, steps, gammas, st.integers(0, 2000))
def test_exp_range_amplitude_within_envelope(
    base: float, ratio: float, step: int, gamma: float, it: int
) -> None:
    top = base * ratio
    lr = exp_range(it, base, top, step, gamma)
    assert lr - base <= (top - base) * gamma**it + REL * top
    assert lr >= base


def test_cyclic_examples_from_the_paper_formula() -> None:
    # base 0.001, max 0.006, step 2000: quarter, peak, three quarters, end of cycle 1.
    assert triangular(1000, 0.001, 0.006, 2000) == pytest.approx(0.0035, rel=REL)
    assert triangular(2000, 0.001, 0.006, 2000) == pytest.approx(0.006, rel=REL)
    assert triangular(3000, 0.001, 0.006, 2000) == pytest.approx(0.0035, rel=REL)
    assert triangular(4000, 0.001, 0.006, 2000) == pytest.approx(0.001, rel=REL)
    assert triangular2(6000, 0.001, 0.006, 2000) == pytest.approx(0.0035, rel=REL)
    assert exp_range(2000, 0.001, 0.006, 2000, 0.999) == pytest.approx(
        0.001 + 0.005 * 0.999**2000, rel=REL
    )
    # Asymmetric: 1 iteration up, 3 down; the peak at 1, back at base at 4.
    assert [triangular(i, 1.0, 2.0, 1, 3) for i in range(6)] == pytest.approx(
        [1.0, 2.0, 5 / 3, 4 / 3, 1.0, 2.0], rel=REL
    )


def test_decay_is_linear_then_fixed() -> None:
    values = [decay_lr(i, 0.01, 0.11, 10) for i in range(15)]
    assert values[0] == pytest.approx(0.11, rel=REL)
    assert values[5] == pytest.approx(0.06, rel=REL)
    assert values[10:] == [0.01] * 5
    assert all(a > b for a, b in itertools.pairwise(values[:11]))


def test_step_and_exp_formulas() -> None:
    assert [step_lr(i, 1.0, 3, 0.5) for i in (0, 2, 3, 5, 6, 9)] == [1, 1, 0.5, 0.5, 0.25, 0.125]
    assert exp_lr(10, 0.1, 0.9) == pytest.approx(0.1 * 0.9**10, rel=REL)
    assert fixed_lr(12345, 0.3) == 0.3


def test_cosine_endpoints() -> None:
    assert cosine_lr(0, 0.01, 0.1, 100) == pytest.approx(0.1, rel=REL)
    assert cosine_lr(50, 0.01, 0.1, 100) == pytest.approx(0.055, rel=REL)
    assert cosine_lr(100, 0.01, 0.1, 100) == 0.01
    assert cosine_lr(1000, 0.01, 0.1, 100) == 0.01


def test_one_cycle_endpoints() -> None:
    total = 100
    assert one_cycle_lr(0, 1.0, total) == pytest.approx(1.0 / 25, rel=REL)
    assert one_cycle_lr(29, 1.0, total) == pytest.approx(1.0, rel=REL)  # 0.3 * 100 - 1
    assert one_cycle_lr(total - 1, 1.0, total) == pytest.approx(1.0 / 25 / 1e4, rel=REL)
    # After the budget the final value holds (torch would raise).
    assert one_cycle_lr(total + 50, 1.0, total) == one_cycle_lr(total - 1, 1.0, total)
    three = [one_cycle_lr(i, 1.0, total, three_phase=True) for i in (0, 29, 58, 99)]
    assert three == pytest.approx([0.04, 1.0, 0.04, 0.04 / 1e4], rel=REL)


# ---- validation --------------------------------------------------------------------------------

BASE = {"iteration": 0, "base_lr": 0.01, "max_lr": 0.1, "step_size": 5}
ONE = {"iteration": 0, "max_lr": 0.1, "total_iterations": 100}
WSD = {"iteration": 0, "lr": 0.1, "total_iterations": 100}


@pytest.mark.parametrize(
    ("function", "kwargs", "name", "bad"),
    [
        (fixed_lr, {"iteration": 0, "lr": 0.0}, "lr", "0.0"),
        (fixed_lr, {"iteration": 0, "lr": math.inf}, "lr", "inf"),
        (fixed_lr, {"iteration": -1, "lr": 0.1}, "iteration", "-1"),
        (fixed_lr, {"iteration": 1.5, "lr": 0.1}, "iteration", "1.5"),
        (step_lr, {"iteration": 0, "lr": 0.1, "step_size": 0}, "step_size", "0"),
        (step_lr, {"iteration": 0, "lr": 0.1, "step_size": 2, "gamma": 1.5}, "gamma", "1.5"),
        (exp_lr, {"iteration": 0, "lr": 0.1, "gamma": 0.0}, "gamma", "0.0"),
        (exp_lr, {"iteration": 0, "lr": "0.1", "gamma": 0.9}, "lr", "'0.1'"),
        (decay_lr, {**BASE, "max_lr": 0.001}, "max_lr", "0.001"),
        (decay_lr, {**BASE, "step_size": True}, "step_size", "True"),
        (cyclic_lr, {**BASE, "base_lr": -0.1}, "base_lr", "-0.1"),
        (cyclic_lr, {**BASE, "max_lr": math.nan}, "max_lr", "nan"),
        (cyclic_lr, {**BASE, "step_size": 2.5}, "step_size", "2.5"),
        (cyclic_lr, {**BASE, "step_size_down": 0}, "step_size_down", "0"),
        (cyclic_lr, {**BASE, "mode": "sine"}, "mode", "'sine'"),
        (cyclic_lr, {**BASE, "mode": "exp_range", "gamma": 2.0}, "gamma", "2.0"),
        (cyclic_lr, {**BASE, "iteration": -3}, "iteration", "-3"),
        (cosine_lr, {"iteration": 0, "base_lr": 0.01, "max_lr": 0.1, "total_iterations": 0},
         "total_iterations", "0"),
        (one_cycle_lr, {**ONE, "pct_start": 1.5}, "pct_start", "1.5"),
        (one_cycle_lr, {**ONE, "div_factor": 0.0}, "div_factor", "0.0"),
        (one_cycle_lr, {**ONE, "final_div_factor": -1.0}, "final_div_factor", "-1.0"),
        (one_cycle_lr, {**ONE, "anneal_strategy": "cubic"}, "anneal_strategy", "'cubic'"),
        (one_cycle_lr, {**ONE, "three_phase": "yes"}, "three_phase", "'yes'"),
        (one_cycle_lr, {**ONE, "total_iterations": 10, "pct_start": 0.1}, "pct_start", "0.1"),
        (wsd_lr, {**WSD, "warmup": -1}, "warmup", "-1"),
        (wsd_lr, {**WSD, "decay_fraction": 1.5}, "decay_fraction", "1.5"),
        (wsd_lr, {**WSD, "decay_shape": "exp"}, "decay_shape", "'exp'"),
        (wsd_lr, {**WSD, "min_lr_ratio": -0.1}, "min_lr_ratio", "-0.1"),
        (wsd_lr, {**WSD, "warmup": 90}, "warmup (90)", "total_iterations (100)"),
    ],
)  # fmt: skip
def test_bad_parameter_is_named_with_its_value(
    function: Callable[..., float], kwargs: dict[str, Any], name: str, bad: str
) -> None:
    with pytest.raises(ValueError, match=r".*") as info:
        function(**kwargs)
    message = str(info.value)
    assert name in message
    assert bad in message


def test_one_cycle_zero_length_warm_up_is_what_torch_cannot_do() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ZeroDivisionError):
        OneCycleLR(optimizer, 0.1, total_steps=10, pct_start=0.1, cycle_momentum=False)


def reference_wsd(
    it: int, lr: float, total: int, warmup: int, fraction: float, shape: str, floor: float
) -> float:
    """pytorch-optimizer's WSD schedule, driving an optimizer, at iteration `it`."""
    from pytorch_optimizer.lr_scheduler.wsd import get_wsd_scheduler_lambda

    decay = math.floor(fraction * total + 0.5)
    ratio = get_wsd_scheduler_lambda(
        it,
        num_warmup_steps=warmup,
        num_stable_steps=total - warmup - decay,
        num_decay_steps=decay,
        # Its linear and 1-sqrt decays go to 0 whatever the floor; ours lift every shape
        # onto [floor, 1], which is what the floor does to its cosine.
        min_lr_ratio=floor if shape == "cosine" else 0.0,
        num_cycles=0.5,
        cooldown_type=shape,  # type: ignore[arg-type]
    )
    in_decay = total - decay <= it < total
    if shape != "cosine" and in_decay:
        ratio = floor + (1 - floor) * ratio
    elif it >= total:
        ratio = floor
    return lr * ratio


@settings(max_examples=80, deadline=None)
@given(
    lrs,
    st.integers(1, 300),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.sampled_from(["linear", "cosine", "1-sqrt"]),
    st.floats(0.0, 1.0),
)
def test_wsd_equals_pytorch_optimizers_wsd_schedule(
    lr: float, total: int, warmup_share: float, fraction: float, shape: str, floor: float
) -> None:
    decay = math.floor(fraction * total + 0.5)
    warmup = int(warmup_share * (total - decay))
    from pytorch_optimizer.lr_scheduler.wsd import get_wsd_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = get_wsd_schedule(
        optimizer,
        warmup,
        total - warmup - decay,
        decay,
        min_lr_ratio=floor,
        cooldown_type=shape,  # type: ignore[arg-type]
    )
    for it in range(total + 3):
        want = reference_wsd(it, lr, total, warmup, fraction, shape, floor)
        assert close(wsd_lr(it, lr, total, warmup, fraction, shape, floor), want, lr), it
        if shape == "cosine" or floor == 0.0:
            # Where the two agree on the floor, the package's own scheduler gives it too.
            got = optimizer.param_groups[0]["lr"]
            assert close(wsd_lr(it, lr, total, warmup, fraction, shape, floor), got, lr), it
        optimizer.step()
        scheduler.step()


def test_wsd_phases_by_hand() -> None:
    # 100 iterations: warm-up 10, stable to 80, a linear decay over the last 20 to 0.1 * lr.
    lr = 0.4
    at = [wsd_lr(it, lr, 100, 10, 0.2, "linear", 0.1) for it in (0, 5, 10, 79, 80, 90, 100)]
    assert at == pytest.approx([0.0, 0.2, 0.4, 0.4, 0.4, 0.4 * (0.1 + 0.9 * 0.5), 0.04])
    assert wsd_lr(96, 1.0, 100, 0, 0.2, "1-sqrt") == pytest.approx(1 - math.sqrt(0.8))
    assert wsd_lr(90, 1.0, 100, 0, 0.2, "cosine") == pytest.approx(0.5)
    assert wsd_lr(50, 1.0, 100, 0, 0.0) == 1.0  # no decay: constant after the warm-up


# ---- registry ----------------------------------------------------------------------------------

DECLARED = {
    "fixed": ["lr"],
    "step": ["lr", "step_size", "gamma"],
    "exp": ["lr", "gamma"],
    "decay": ["base_lr", "max_lr", "step_size"],
    "triangular": ["base_lr", "max_lr", "step_size", "step_size_down"],
    "triangular2": ["base_lr", "max_lr", "step_size", "step_size_down"],
    "exp_range": ["base_lr", "max_lr", "step_size", "gamma", "step_size_down"],
    "cosine": ["base_lr", "max_lr", "total_iterations"],
    "one_cycle": [
        "max_lr",
        "total_iterations",
        "pct_start",
        "div_factor",
        "final_div_factor",
        "anneal_strategy",
        "three_phase",
    ],
    "wsd": ["lr", "total_iterations", "warmup", "decay_fraction", "decay_shape", "min_lr_ratio"],
}


def test_registry_declares_the_agreed_names_and_params() -> None:
    assert {name: [p.name for p in policy.params] for name, policy in POLICIES.items()} == DECLARED
    sources = {(n, p.name): p.source for n, policy in POLICIES.items() for p in policy.params}
    assert {k for k, v in sources.items() if v == "budget"} == {
        ("cosine", "total_iterations"),
        ("one_cycle", "total_iterations"),
        ("wsd", "total_iterations"),
    }
    assert {k[1] for k, v in sources.items() if v == "bounds"} == {"lr", "base_lr", "max_lr"}
    defaults = {p.name: p.default for p in POLICIES["one_cycle"].params[2:]}
    assert defaults == {
        "pct_start": 0.3,
        "div_factor": 25.0,
        "final_div_factor": 1e4,
        "anneal_strategy": "cos",
        "three_phase": False,
    }
    assert POLICIES["step"].params[2].default == 0.1
    assert POLICIES["exp_range"].params[3].required


@pytest.mark.parametrize("name", list(POLICIES))
def test_policy_function_takes_its_declared_params(name: str) -> None:
    policy = POLICIES[name]
    arguments = list(inspect.signature(policy.function).parameters)
    assert arguments == ["iteration", *DECLARED[name]]
    described = json.loads(json.dumps(policy.describe()))
    assert described["name"] == name
    assert described["summary"]
    assert [p["name"] for p in described["params"]] == DECLARED[name]


def test_unknown_policy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="sawtooth") as info:
        get_policy("sawtooth")
    assert all(name in str(info.value) for name in POLICIES)


def test_make_schedule_equals_the_function_and_pickles() -> None:
    params = {"base_lr": 0.01, "max_lr": 0.1, "step_size": 4, "step_size_down": None}
    schedule = make_schedule("triangular2", params)
    restored = pickle.loads(pickle.dumps(schedule))
    for it in range(30):
        assert schedule(it) == triangular2(it, 0.01, 0.1, 4) == restored(it)


def test_make_schedule_fills_defaults() -> None:
    schedule = make_schedule("step", {"lr": 1.0, "step_size": 2})
    assert schedule(2) == pytest.approx(0.1, rel=REL)


@pytest.mark.parametrize(
    ("params", "needles"),
    [
        ({"base_lr": 0.01, "max_lr": 0.1, "step_size": 4, "period": 3},
         ["period", "step_size_down"]),
        ({"base_lr": 0.01, "max_lr": 0.1}, ["step_size", "required"]),
        ({"base_lr": "auto", "max_lr": 0.1, "step_size": 4}, ["base_lr", "auto"]),
        ({"base_lr": 0.01, "max_lr": 0.1, "step_size": 0}, ["step_size", "0"]),
        ({"base_lr": 0.2, "max_lr": 0.1, "step_size": 4}, ["max_lr", "0.1"]),
        ({"base_lr": 0.01, "max_lr": 0.1, "step_size": 2.5}, ["step_size", "2.5"]),
    ],
)  # fmt: skip
def test_make_schedule_refuses_bad_params_eagerly(
    params: dict[str, Any], needles: list[str]
) -> None:
    with pytest.raises(ValueError, match=r".*") as info:
        make_schedule("triangular", params)
    assert all(needle in str(info.value) for needle in needles), str(info.value)
