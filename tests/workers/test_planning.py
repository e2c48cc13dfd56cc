"""A study's plan, without Ray: trial ids, arms as they train, the configs trials read."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from clr.bounds import Bounds
from workers.events import RANGE_TEST_TRIAL_ID, PlannedTrial
from workers.planning import (
    arm_budgets,
    arm_trial_config,
    planned_trials,
    range_test_config,
    resolve_arm,
    resolve_arms,
    trial_id,
    trial_setup,
    tuning_trial_config,
)
from workers.spec import StudySpec, parse_spec
from workers.trials import ArmPlan, RangeTestPlan, TrialSetup

SGD = {"name": "sgd", "momentum": 0.9}
BOUNDS = Bounds(base_lr=0.02, max_lr=0.2, method="accuracy", reason="test")
PER_EPOCH = 25  # iterations per epoch of the made-up data set


def study(**changes: Any) -> StudySpec:
    data: dict[str, Any] = {
        "name": "planning",
        "dataset": "digits",
        "model": "mlp",
        "batch_size": 64,
        "iterations": 100,
        "eval_every": 10,
        "seeds": [3, 5],
        "range_test": {"min_lr": 0.001, "max_lr": 1.0, "iterations": 90},
        "arms": [
            {"name": "fixed", "optimizer": SGD, "policy": {"name": "fixed", "lr": "auto"}},
            {
                "name": "tri",
                "optimizer": SGD,
                "cycle_momentum": True,
                "iterations": 60,
                "policy": {
                    "name": "triangular",
                    "base_lr": "auto",
                    "max_lr": "auto",
                    "step_size": {"epochs": 0.5},
                },
            },
            {
                "name": "cos",
                "optimizer": {"name": "adam"},
                "policy": {"name": "cosine", "base_lr": 0.001, "max_lr": 0.01},
            },
            {
                "name": "tuned",
                "optimizer": SGD,
                "policy": "fixed",
                "tuning": {"trials": 4, "seed": 7, "space": {"lr": {"low": 1e-3, "high": 1.0}}},
            },
        ],
    }
    data.update(changes)
    return parse_spec(data)


def test_planning_needs_no_ray() -> None:
    code = "import sys, workers.planning; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "'ray'" not in loaded
    assert "'optuna'" not in loaded


def test_every_arm_with_every_seed_in_the_spec_order() -> None:
    spec = study()
    planned = planned_trials(spec, 100)
    assert list(planned) == [
        "fixed-s3", "fixed-s5", "tri-s3", "tri-s5", "cos-s3", "cos-s5", "tuned-s3", "tuned-s5"
    ]  # fmt: skip
    assert planned["tri-s5"] == PlannedTrial("tri-s5", "tri", 5, 60)
    assert planned["fixed-s3"] == PlannedTrial("fixed-s3", "fixed", 3, 100)
    assert trial_id("tri", 5) == "tri-s5"
    assert arm_budgets(spec, 100) == {"fixed": 100, "tri": 60, "cos": 100, "tuned": 100}


def test_auto_params_come_from_the_bounds_and_epochs_become_iterations() -> None:
    arms = resolve_arms(study(), PER_EPOCH, 100, BOUNDS, {"tuned": {"lr": 0.3}})
    # A fixed arm's "auto" lr is the lower bound (Table 1: fixed 0.001, CLR 0.001-0.006).
    assert arms["fixed"]["policy"] == {"name": "fixed", "params": {"lr": 0.02}}
    assert arms["fixed"]["auto"] == ["lr"]
    tri = arms["tri"]
    assert tri["policy"]["params"]["base_lr"] == 0.02
    assert tri["policy"]["params"]["max_lr"] == 0.2
    assert tri["policy"]["params"]["step_size"] == 12  # round(0.5 * 25)
    assert tri["iterations"] == 60
    assert tri["cycle_momentum"] is True
    assert tri["optimizer"] == {"name": "sgd", "options": {"momentum": 0.9}}
    # The budget fills the parameters a policy takes from it.
    assert arms["cos"]["policy"]["params"]["total_iterations"] == 100
    assert arms["cos"]["auto"] == []
    assert arms["tuned"]["policy"]["params"] == {"lr": 0.3}
    assert arms["tuned"]["tuned"] == ["lr"]


def test_epochs_round_to_at_least_one_iteration() -> None:
    spec = study()
    assert resolve_arm(spec.arms[1], 1, 60, BOUNDS, None)["policy"]["params"]["step_size"] == 1


def test_a_tuned_arm_before_its_search_leaves_the_tuned_params_out() -> None:
    spec = study()
    resolved = resolve_arm(spec.arms[3], PER_EPOCH, 40, None, None)
    assert resolved["policy"]["params"] == {}
    assert resolved["tuned"] == ["lr"]
    config = tuning_trial_config(spec, "tuned", 7, 40, resolved)
    assert config["trial_id"] == "tuned-tuning"
    assert config["tuned"] == ["lr"]
    assert TrialSetup(**config["setup"]).seed == 7
    plan = ArmPlan(**config["plan"])
    assert (plan.iterations, plan.eval_every) == (40, 10)


def test_an_arm_trial_config_is_what_its_trainable_reads() -> None:
    spec = study()
    arms = resolve_arms(spec, PER_EPOCH, 100, BOUNDS, {"tuned": {"lr": 0.3}})
    trial = planned_trials(spec, 100)["tri-s5"]
    config = arm_trial_config(spec, trial, arms["tri"], checkpoint_every_s=2.5)
    assert config["trial_id"] == "tri-s5"
    assert config["cpus"] == spec.resources_per_trial.cpu
    assert config["checkpoint_every_s"] == 2.5
    setup = TrialSetup(**config["setup"])
    assert (setup.trial_id, setup.seed, setup.batch_size, setup.device) == ("tri-s5", 5, 64, "cpu")
    assert setup.model == {"name": "mlp", "options": {}}
    plan = ArmPlan(**config["plan"])
    assert plan.policy == arms["tri"]["policy"]
    assert (plan.iterations, plan.eval_every, plan.cycle_momentum) == (60, 10, True)


def test_a_gpu_trial_runs_on_cuda() -> None:
    spec = study(resources_per_trial={"cpu": 1, "gpu": 1})
    assert trial_setup(spec, "t", 0, {"name": "sgd", "options": {}})["device"] == "cuda"


@pytest.mark.parametrize(("eval_every", "expected"), [(None, 3), (7, 7)])
def test_the_range_test_config(eval_every: int | None, expected: int) -> None:
    test = {"min_lr": 0.001, "max_lr": 1.0, "iterations": 90, "eval_every": eval_every}
    spec = study(range_test={k: v for k, v in test.items() if v is not None})
    config = range_test_config(spec, PER_EPOCH)
    assert config["trial_id"] == RANGE_TEST_TRIAL_ID
    plan = RangeTestPlan(**config["plan"])
    # Without eval_every, about 30 evaluations: 90 // 30.
    assert (plan.min_lr, plan.max_lr, plan.iterations, plan.eval_every) == (
        0.001,
        1.0,
        90,
        expected,
    )
    assert TrialSetup(**config["setup"]).seed == 0
