"""build_scheduler: torch optimizers follow the registry's policies, momentum, checkpoints."""

from __future__ import annotations

import io
import itertools
import math
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

from clr.momentum import momentum_schedule
from clr.policies import POLICIES, make_schedule
from clr.schedulers import PolicyLR, build_scheduler

REL = 1e-12
BUDGET = 24  # iterations of the budget-bound policies

# At least one example per registry policy, and the variants that take other code paths.
EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("fixed", {"lr": 0.05}),
    ("step", {"lr": 0.1, "step_size": 5, "gamma": 0.5}),
    ("exp", {"lr": 0.1, "gamma": 0.9}),
    ("decay", {"base_lr": 0.01, "max_lr": 0.1, "step_size": 10}),
    ("triangular", {"base_lr": 0.01, "max_lr": 0.1, "step_size": 4}),
    ("triangular", {"base_lr": 0.01, "max_lr": 0.1, "step_size": 2, "step_size_down": 5}),
    ("triangular2", {"base_lr": 0.01, "max_lr": 0.1, "step_size": 3}),
    ("exp_range", {"base_lr": 0.01, "max_lr": 0.1, "step_size": 3, "gamma": 0.95}),
    ("cosine", {"base_lr": 0.01, "max_lr": 0.1, "total_iterations": BUDGET}),
    ("one_cycle", {"max_lr": 0.1, "total_iterations": BUDGET}),
    (
        "one_cycle",
        {
            "max_lr": 0.1,
            "total_iterations": BUDGET,
            "pct_start": 0.25,
            "anneal_strategy": "linear",
            "three_phase": True,
        },
    ),
    ("wsd", {"lr": 0.1, "total_iterations": BUDGET, "warmup": 3, "min_lr_ratio": 0.1}),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(EXAMPLES)]
STEPS = 2 * BUDGET + 3  # past the budget: cosine and one_cycle must hold their last value


def sgd(momentum: float = 0.9) -> torch.optim.SGD:
    # An lr the policies never take, so a scheduler that forgets to set it shows.
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=7.0, momentum=momentum)


def momentum_of(group: dict[str, Any]) -> float:
    return float(group["betas"][0] if "betas" in group else group["momentum"])


def run(
    optimizer: torch.optim.Optimizer, scheduler: LRScheduler, steps: int
) -> list[tuple[float, float]]:
    """(lr, momentum) of the first group now and after each of `steps` steps."""
    out = [(optimizer.param_groups[0]["lr"], momentum_of(optimizer.param_groups[0]))]
    for _ in range(steps):
        optimizer.step()  # torch warns when a scheduler steps before its optimizer
        scheduler.step()
        out.append((optimizer.param_groups[0]["lr"], momentum_of(optimizer.param_groups[0])))
    return out


def test_examples_cover_the_registry() -> None:
    assert {name for name, _ in EXAMPLES} == set(POLICIES)


@pytest.mark.parametrize(("name", "params"), EXAMPLES, ids=IDS)
def test_lr_after_k_steps_is_the_policy_at_k(name: str, params: dict[str, Any]) -> None:
    schedule = make_schedule(name, params)
    optimizer = sgd()
    scheduler = build_scheduler(optimizer, name, params)
    for k, (lr, momentum) in enumerate(run(optimizer, scheduler, STEPS)):
        assert math.isclose(lr, schedule(k), rel_tol=REL), (k, lr, schedule(k))
        assert momentum == 0.9  # momentum cycling is off by default


@pytest.mark.parametrize(("name", "params"), EXAMPLES, ids=IDS)
def test_every_param_group_follows_the_policy_whatever_came_before(
    name: str, params: dict[str, Any]
) -> None:
    first, second = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    groups: list[dict[str, Any]] = [{"params": [first]}, {"params": [second], "lr": 3.0}]
    optimizer = torch.optim.SGD(groups, lr=5.0)
    # An earlier scheduler leaves "initial_lr" behind; the new one must not start from it.
    build_scheduler(optimizer, "exp", {"lr": 9.0, "gamma": 0.5})
    scheduler = build_scheduler(optimizer, name, params)
    schedule = make_schedule(name, params)
    optimizer.step()
    for k in range(1, 12):
        scheduler.step()
        for group in optimizer.param_groups:
            assert math.isclose(group["lr"], schedule(k), rel_tol=REL), k


@pytest.mark.parametrize("adam", [False, True], ids=["sgd", "adam"])
@pytest.mark.parametrize(("name", "params"), EXAMPLES, ids=IDS)
def test_momentum_moves_inversely_to_the_lr(name: str, params: dict[str, Any], adam: bool) -> None:
    base_momentum, max_momentum = 0.8, 0.95
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1.0) if adam else sgd()
    scheduler = build_scheduler(
        optimizer,
        name,
        params,
        cycle_momentum=True,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
    )
    trace = run(optimizer, scheduler, STEPS)
    schedule = make_schedule(name, params)
    for k, (lr, momentum) in enumerate(trace):
        assert math.isclose(lr, schedule(k), rel_tol=REL), k
        assert base_momentum - 1e-12 <= momentum <= max_momentum + 1e-12, k
    for k, ((lr0, m0), (lr1, m1)) in enumerate(itertools.pairwise(trace)):
        if math.isclose(lr0, lr1, rel_tol=1e-9):
            assert math.isclose(m0, m1, rel_tol=1e-9), k
        else:
            assert (lr1 - lr0) * (m1 - m0) <= 0, (k, lr0, lr1, m0, m1)
    # The highest lr gets the lowest momentum.
    peak = max(range(len(trace)), key=lambda k: trace[k][0])
    assert trace[peak][1] == min(m for _, m in trace)


def test_triangular_momentum_by_hand() -> None:
    # lr 0.01 at 0, 0.055 at step/2, 0.1 at step: momentum 0.95, 0.90, 0.85.
    optimizer = sgd()
    params = {"base_lr": 0.01, "max_lr": 0.1, "step_size": 40}
    scheduler = build_scheduler(optimizer, "triangular", params, cycle_momentum=True)
    momenta = [momentum for _, momentum in run(optimizer, scheduler, 40)]
    assert [momenta[0], momenta[20], momenta[40]] == pytest.approx([0.95, 0.90, 0.85], rel=REL)


@pytest.mark.parametrize(("name", "params"), EXAMPLES, ids=IDS)
def test_the_scheduler_cycles_momentum_by_the_one_rule(name: str, params: dict[str, Any]) -> None:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(
        optimizer, name, params, cycle_momentum=True, base_momentum=0.8, max_momentum=0.9
    )
    rule = momentum_schedule(name, params, 0.8, 0.9)
    for k, (_, momentum) in enumerate(run(optimizer, scheduler, STEPS)):
        assert momentum == pytest.approx(rule(k), rel=REL), k


def test_momentum_maps_linearly_between_the_bounds() -> None:
    optimizer = sgd()
    params = {"base_lr": 0.01, "max_lr": 0.11, "total_iterations": 10}
    scheduler = build_scheduler(optimizer, "cosine", params, cycle_momentum=True)
    for lr, momentum in run(optimizer, scheduler, 12):
        share = (lr - 0.01) / 0.1
        assert momentum == pytest.approx(0.95 - 0.1 * share, rel=REL)


def test_cycling_momentum_needs_an_optimizer_with_momentum() -> None:
    optimizer = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="Adagrad"):
        build_scheduler(optimizer, "fixed", {"lr": 0.1}, cycle_momentum=True)


@pytest.mark.parametrize(
    ("base_momentum", "max_momentum", "needle"),
    [(-0.1, 0.9, "base_momentum"), (0.9, 0.8, "max_momentum"), (0.8, 1.0, "max_momentum")],
)
def test_bad_momentum_bounds_are_refused(
    base_momentum: float, max_momentum: float, needle: str
) -> None:
    with pytest.raises(ValueError, match=needle):
        build_scheduler(
            sgd(),
            "triangular",
            {"base_lr": 0.01, "max_lr": 0.1, "step_size": 4},
            cycle_momentum=True,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
        )


def test_bad_params_are_refused_before_the_optimizer_changes() -> None:
    optimizer = sgd()
    with pytest.raises(ValueError, match="step_size"):
        build_scheduler(optimizer, "triangular", {"base_lr": 0.01, "max_lr": 0.1, "step_size": 0})
    assert optimizer.param_groups[0]["lr"] == 7.0
    assert "initial_lr" not in optimizer.param_groups[0]


@pytest.mark.parametrize("cycle_momentum", [False, True], ids=["lr", "lr+momentum"])
@pytest.mark.parametrize(("name", "params"), EXAMPLES, ids=IDS)
def test_checkpoint_resume_continues_the_same_sequence(
    name: str, params: dict[str, Any], cycle_momentum: bool
) -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0, momentum=0.9)
    scheduler = build_scheduler(optimizer, name, params, cycle_momentum=cycle_momentum)
    run(optimizer, scheduler, 7)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    expected = run(optimizer, scheduler, BUDGET)

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)  # plain data only
    resumed_optimizer = torch.optim.SGD([parameter], lr=1.0, momentum=0.9)
    resumed = build_scheduler(resumed_optimizer, name, params, cycle_momentum=cycle_momentum)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed.load_state_dict(checkpoint["scheduler"])
    assert run(resumed_optimizer, resumed, BUDGET) == expected


def test_policy_lr_serves_any_registry_policy() -> None:
    # one_cycle normally runs on torch's OneCycleLR; PolicyLR maps its full lr range too.
    params = {"max_lr": 0.1, "total_iterations": BUDGET, "pct_start": 0.25}  # peak at 5
    optimizer = sgd()
    scheduler = PolicyLR(optimizer, "one_cycle", params, momentum=(0.85, 0.95))
    schedule = make_schedule("one_cycle", params)
    trace = run(optimizer, scheduler, BUDGET)
    assert [lr for lr, _ in trace] == [schedule(k) for k in range(BUDGET + 1)]
    peak = max(trace)
    assert peak == (pytest.approx(0.1, rel=REL), pytest.approx(0.85, rel=REL))
    assert trace[-1][1] == pytest.approx(0.95, rel=REL)  # at the final, lowest lr
