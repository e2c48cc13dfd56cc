"""A study's plan as plain data: its trials, its arms as they will train, trial configs.

Pure functions of the spec, the data set's size and the bounds: no Ray, no training. The
runner hands what they return to Ray Tune, whose trainables (`workers.trainables`) read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from clr.bounds import Bounds
from clr.policies import check_policy_params, get_policy
from workers.events import RANGE_TEST_TRIAL_ID, PlannedTrial
from workers.spec import AUTO, TUNED, ArmSpec, Limits, StudySpec
from workers.trials import ArmPlan, RangeTestPlan, TrialSetup

# Evaluations of a range test whose spec leaves eval_every out.
RANGE_TEST_EVALUATIONS = 30


def trial_id(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def arm_budgets(spec: StudySpec, budget: int) -> dict[str, int]:
    """Iterations of each arm: its own, or the study's budget."""
    return {arm.name: arm.iterations or budget for arm in spec.arms}


def planned_trials(spec: StudySpec, budget: int) -> dict[str, PlannedTrial]:
    """Every arm with every seed, by trial id, in the spec's order."""
    budgets = arm_budgets(spec, budget)
    return {
        trial_id(arm.name, seed): PlannedTrial(
            trial_id(arm.name, seed), arm.name, seed, budgets[arm.name]
        )
        for arm in spec.arms
        for seed in spec.seeds
    }


def resolve_arms(
    spec: StudySpec,
    iterations_per_epoch: int,
    budget: int,
    bounds: Bounds | None,
    chosen: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Arms as they will train: "auto" from the bounds, "tuned" from `chosen` (per arm),
    epochs in iterations."""
    return {
        arm.name: resolve_arm(
            arm, iterations_per_epoch, arm.iterations or budget, bounds, chosen.get(arm.name)
        )
        for arm in spec.arms
    }


def resolve_arm(
    arm: ArmSpec,
    iterations_per_epoch: int,
    iterations: int,
    bounds: Bounds | None,
    chosen: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One arm resolved for `iterations`; without `chosen`, its tuned params are left out
    (a tuning trial adds the values it tries)."""
    params: dict[str, Any] = {}
    auto: list[str] = []
    tuned: list[str] = []
    for key, value in arm.policy.params.items():
        if value == AUTO:
            assert bounds is not None
            # A fixed/step/exp arm's "auto" lr is the lower bound: the paper's Table 1
            # pairs a fixed LR of 0.001 with CLR bounds of 0.001-0.006.
            params[key] = bounds.max_lr if key == "max_lr" else bounds.base_lr
            auto.append(key)
        elif value == TUNED:
            tuned.append(key)
            if chosen is not None:
                params[key] = chosen[key]
        elif isinstance(value, Mapping) and "epochs" in value:
            params[key] = max(1, round(float(value["epochs"]) * iterations_per_epoch))
        else:
            params[key] = value
    for param in get_policy(arm.policy.name).params:
        if param.source == "budget" and param.name not in params:
            params[param.name] = iterations
    if chosen is not None or not tuned:
        params = check_policy_params(arm.policy.name, params)  # complete, with defaults
    return {
        "optimizer": {"name": arm.optimizer.name, "options": dict(arm.optimizer.options)},
        "policy": {"name": arm.policy.name, "params": params},
        "auto": auto,
        "tuned": tuned,
        "iterations": iterations,
        "cycle_momentum": arm.cycle_momentum,
    }


def trial_setup(
    spec: StudySpec, trial: str, seed: int, optimizer: Mapping[str, Any]
) -> dict[str, Any]:
    """A trial's `TrialSetup` as a plain dict."""
    device = "cuda" if spec.resources_per_trial.gpu > 0 else "cpu"
    return asdict(
        TrialSetup(
            trial_id=trial,
            seed=seed,
            model={"name": spec.model.name, "options": dict(spec.model.options)},
            optimizer={"name": optimizer["name"], "options": dict(optimizer["options"])},
            batch_size=spec.batch_size,
            device=device,
            bf16=spec.bf16,
        )
    )


def _arm_plan(spec: StudySpec, resolved: Mapping[str, Any], iterations: int) -> dict[str, Any]:
    return asdict(
        ArmPlan(
            policy=resolved["policy"],
            iterations=iterations,
            eval_every=spec.eval_every,
            cycle_momentum=resolved["cycle_momentum"],
        )
    )


def arm_trial_config(
    spec: StudySpec,
    trial: PlannedTrial,
    resolved: Mapping[str, Any],
    checkpoint_every_s: float,
) -> dict[str, Any]:
    """What `arm_trainable` reads: one arm (as `resolve_arm` gives it) with one seed."""
    return {
        "trial_id": trial.trial_id,
        "cpus": spec.resources_per_trial.cpu,
        "checkpoint_every_s": checkpoint_every_s,
        "setup": trial_setup(spec, trial.trial_id, trial.seed, resolved["optimizer"]),
        "plan": _arm_plan(spec, resolved, resolved["iterations"]),
    }


def tuning_trial_config(
    spec: StudySpec,
    arm: str,
    seed: int,
    max_iterations: int,
    resolved: Mapping[str, Any],
) -> dict[str, Any]:
    """What `tuning_trainable` reads under the searched values: the arm without them."""
    trial = f"{arm}-tuning"
    return {
        "trial_id": trial,
        "cpus": spec.resources_per_trial.cpu,
        "tuned": resolved["tuned"],
        "setup": trial_setup(spec, trial, seed, resolved["optimizer"]),
        "plan": _arm_plan(spec, resolved, max_iterations),
    }


def range_test_config(
    spec: StudySpec, iterations_per_epoch: int, limits: Limits | None = None
) -> dict[str, Any]:
    """What `range_test_trainable` reads; the range test's budget is checked here."""
    test = spec.range_test
    assert test is not None
    iterations = test.check_budget(iterations_per_epoch, limits)
    eval_every = test.eval_every or max(1, iterations // RANGE_TEST_EVALUATIONS)
    return {
        "trial_id": RANGE_TEST_TRIAL_ID,
        "cpus": spec.resources_per_trial.cpu,
        "setup": trial_setup(spec, RANGE_TEST_TRIAL_ID, 0, test.optimizer.model_dump()),
        "plan": asdict(
            RangeTestPlan(
                min_lr=test.min_lr,
                max_lr=test.max_lr,
                iterations=iterations,
                ramp=test.ramp,
                eval_every=eval_every,
                stop_factor=test.stop_factor,
            )
        ),
    }
