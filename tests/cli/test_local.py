"""`clrstudy list`, and `run`'s smoke mode as a spec transformation (the examples run it:
tests/test_examples.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli.local import SMOKE_ITERATIONS, SMOKE_RANGE_TEST, SMOKE_TUNING_TRIALS, smoke
from tests.cli.conftest import Cli
from tests.factories import study_spec, tuned_spec
from workers.spec import PolicySpec, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_smoke_keeps_every_arm_the_range_test_and_tuning(example: Path) -> None:
    spec = load_spec(example)
    small = smoke(spec)
    assert [a.name for a in small.arms] == [a.name for a in spec.arms]
    # Policies are kept, but for a warm-up in iterations, which shrinks with the budget.
    assert [_without_warmup(a.policy) for a in small.arms] == [
        _without_warmup(a.policy) for a in spec.arms
    ]
    assert [a.optimizer for a in small.arms] == [a.optimizer for a in spec.arms]
    assert (small.baseline, small.target_accuracy) == (spec.baseline, spec.target_accuracy)
    assert small.needs_range_test == spec.needs_range_test
    assert (small.range_test is None) == (spec.range_test is None)
    assert [a.tuning is None for a in small.arms] == [a.tuning is None for a in spec.arms]
    assert small.iterations == SMOKE_ITERATIONS and small.seeds == spec.seeds[:1]
    assert small.eval_every <= SMOKE_ITERATIONS // 3
    assert small.batch_size <= 32
    assert (small.resources_per_trial.cpu, small.resources_per_trial.gpu) == (1, 0)


def _without_warmup(policy: PolicySpec) -> tuple[str, dict[str, Any]]:
    return policy.name, {k: v for k, v in policy.params.items() if k != "warmup"}


def test_smoke_shrinks_a_warm_up_with_the_budget() -> None:
    spec = load_spec(EXAMPLES / "digits-modern.yaml")  # 672 iterations, warm-up 21
    small = smoke(spec)
    wsd = next(a for a in small.arms if a.policy.name == "wsd")
    assert wsd.policy.params["warmup"] == round(21 * SMOKE_ITERATIONS / 672) == 1


def test_smoke_scales_an_arm_own_budget_with_the_study() -> None:
    small = smoke(load_spec(EXAMPLES / "cifar10-paper.yaml"))  # 70,000; 25,000; 42,000
    assert [a.iterations for a in small.arms] == [None, 9, 14]


def test_smoke_shortens_budgets_in_epochs_the_range_test_and_the_search() -> None:
    spec = parse_spec(
        study_spec(
            iterations=None,
            epochs=12,
            range_test={"min_lr": 0.001, "max_lr": 1.0, "epochs": 6},
        )
    )
    small = smoke(spec)
    assert (small.iterations, small.epochs) == (SMOKE_ITERATIONS, None)
    assert small.range_test is not None
    assert (small.range_test.iterations, small.range_test.epochs) == (SMOKE_RANGE_TEST, None)
    assert small.range_test.min_lr == 0.001 and small.range_test.max_lr == 1.0

    tuned = parse_spec(tuned_spec())
    arm, searched = smoke(tuned).arms[1], tuned.arms[1]
    assert arm.tuning is not None and searched.tuning is not None
    assert arm.tuning.trials == SMOKE_TUNING_TRIALS < searched.tuning.trials
    assert (arm.tuning.max_iterations, arm.tuning.grace_period) == (None, None)
    assert arm.tuning.space == searched.tuning.space


def test_smoke_caps_a_data_set_that_takes_a_size() -> None:
    spec = parse_spec(study_spec(dataset={"name": "synthetic", "train_size": 20_000}))
    options = smoke(spec).dataset.options
    assert (options["train_size"], options["test_size"]) == (512, 256)


def test_list_prints_each_registry_entry_and_its_parameters(cli: Cli) -> None:
    code, out, _ = cli("list", "policies")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[0] == "fixed" and lines[1].split() == ["params:", "lr"]
    assert any(line.startswith("triangular2 ") for line in lines)
    code, out, _ = cli("list", "datasets")
    assert code == 0 and "cifar10" in out and "params: path='.'" in out


def test_list_optimizers_shows_every_option_default_and_stepping_rule(cli: Cli) -> None:
    code, out, _ = cli("list", "optimizers")
    assert code == 0
    lines = out.splitlines()
    width = len("adamw_schedulefree")
    start = lines.index(next(line for line in lines if line.startswith("prodigy ")))
    assert lines[start + 1].split(maxsplit=1) == [
        "params:",
        "beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0, decouple=True, "
        "use_bias_correction=False, safeguard_warmup=False, d0=1e-06, d_coef=1.0",
    ]
    assert lines[start + 2] == " " * width + " stepping: parameter-free, not batchable"
    assert "stepping: parameter-free, averaged, not batchable" in out  # dog, ldog
    assert "stepping: schedule-free\n" in out
    assert "reps_rel=1e-06" in out
    assert lines[0].startswith("sgd" + " " * (width - 2))  # names aligned to the longest


def test_run_of_an_invalid_spec_says_why_and_starts_nothing(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndataset: nope\n")
    code, _, err = cli("run", str(path), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "invalid study spec" in err and "unknown data set 'nope'" in err
    assert not (tmp_path / "out").exists()
