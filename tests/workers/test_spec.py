from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from workers.spec import Limits, RangeTestSpec, SpecError, StudySpec, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SGD = {"name": "sgd", "momentum": 0.9}


def study(**changes: Any) -> dict[str, Any]:
    """A small valid spec as a dict, with top-level fields replaced by `changes`."""
    data: dict[str, Any] = {
        "name": "unit",
        "dataset": "digits",
        "model": "mlp",
        "batch_size": 64,
        "iterations": 100,
        "eval_every": 10,
        "seeds": 2,
        "range_test": {"min_lr": 0.001, "max_lr": 1.0, "iterations": 50},
        "arms": [
            {"name": "fixed", "optimizer": SGD, "policy": {"name": "fixed", "lr": "auto"}},
            {
                "name": "tri",
                "optimizer": SGD,
                "policy": {
                    "name": "triangular",
                    "base_lr": "auto",
                    "max_lr": "auto",
                    "step_size": 20,
                },
            },
        ],
    }
    data.update(changes)
    return data


def with_arm(index: int, **changes: Any) -> dict[str, Any]:
    data = study()
    data["arms"][index].update(changes)
    return data


def error(data: Any, limits: Limits | None = None) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, limits)
    return str(info.value)


# ---- the examples ------------------------------------------------------------------------


def test_digits_example_parses_and_takes_bounds_from_the_range_test() -> None:
    spec = load_spec(EXAMPLES / "digits.yaml")
    assert spec.dataset.name == "digits"
    assert spec.range_test is not None and spec.needs_range_test
    assert len(spec.arms) * len(spec.seeds) == 18
    assert set(spec.auto_arms()) == {a.name for a in spec.arms if a.optimizer.name == "sgd"}
    assert spec.baseline == spec.arms[0].name


def test_paper_example_has_per_arm_budgets_of_table_1() -> None:
    spec = load_spec(EXAMPLES / "cifar10-paper.yaml")
    budgets = {a.policy.name: a.iterations or spec.iterations for a in spec.arms}
    assert budgets == {"fixed": 70_000, "triangular2": 25_000, "exp_range": 42_000}
    assert not spec.needs_range_test
    assert spec.resources_per_trial.gpu == 1


def test_adaptive_example_pairs_each_optimizer_with_triangular() -> None:
    spec = load_spec(EXAMPLES / "cifar10-adaptive.yaml")
    optimizers = {a.optimizer.name for a in spec.arms}
    assert optimizers == {"nesterov", "adam", "rmsprop", "adagrad", "adadelta"}
    for name in optimizers:
        policies = {a.policy.name for a in spec.arms if a.optimizer.name == name}
        assert policies == {"fixed", "triangular"}


def test_schema_example_is_valid_and_the_schema_builds() -> None:
    schema = StudySpec.model_json_schema()
    spec = parse_spec(schema["examples"][0])
    assert spec.needs_range_test
    assert "seeds" in schema["properties"]


# ---- normalisation -----------------------------------------------------------------------


def test_forms_of_components_and_policies_dump_alike() -> None:
    policy = {"name": "fixed", "lr": 0.1}
    dumps = []
    for dataset, model, optimizer, arm_policy in [
        ("digits", "mlp", "sgd", policy),
        ({"name": "digits"}, {"name": "mlp"}, {"name": "sgd"}, policy),
        (
            {"name": "digits", "options": {}},
            {"name": "mlp", "options": {}},
            {"name": "sgd", "options": {}},
            {"name": "fixed", "params": {"lr": 0.1}},
        ),
    ]:
        data = study(dataset=dataset, model=model, range_test=None)
        data["arms"] = [{"name": "a", "optimizer": optimizer, "policy": arm_policy}]
        dumps.append(parse_spec(data).model_dump())
    assert dumps[0] == dumps[1] == dumps[2]
    assert dumps[0]["dataset"] == {"name": "digits", "options": {}}
    assert dumps[0]["arms"][0]["policy"] == {"name": "fixed", "params": {"lr": 0.1}}


def test_policy_name_alone_is_a_policy_without_params() -> None:
    data = study(range_test=None)
    data["arms"] = [{"name": "a", "optimizer": "sgd", "policy": "cosine"}]
    assert "params.base_lr is required by cosine" in error(data)


def test_options_are_converted_and_defaults_left_to_the_registry() -> None:
    spec = parse_spec(study(dataset={"name": "digits", "test_fraction": 0.2}))
    assert spec.dataset.options == {"test_fraction": 0.2}
    spec = parse_spec(study(model={"name": "small_cnn", "width": 8.0}))
    assert spec.model.options == {"width": 8} and isinstance(spec.model.options["width"], int)


def test_a_dump_validates_back_to_the_same_spec() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        spec = load_spec(path)
        assert parse_spec(json.loads(spec.model_dump_json())) == spec


def test_seed_count_and_list() -> None:
    assert parse_spec(study(seeds=3)).seeds == [0, 1, 2]
    assert parse_spec(study(seeds=[7, 3])).seeds == [7, 3]
    assert parse_spec(study(seeds=[0])).seeds == [0]


@pytest.mark.parametrize(
    ("seeds", "expected"),
    [
        (0, "seeds: a seed count must be between 1 and 10, got 0"),
        ([1, 2, 1], "seeds: must be distinct, got 1 more than once"),
        ([-1], "seeds: must be in 0..4294967295, got -1"),
        ([], "seeds: give 1 to 10 seeds, got 0"),
        (11, "seeds: a seed count must be between 1 and 10, got 11"),
        (10**12, "seeds: a seed count must be between 1 and 10, got 1000000000000"),
        (True, "seeds: Input should be a valid list, got True"),
    ],
)
def test_bad_seeds(seeds: Any, expected: str) -> None:
    assert expected in error(study(seeds=seeds))


def test_defaults() -> None:
    data = study()
    del data["seeds"], data["eval_every"]
    spec = parse_spec(data)
    assert spec.seeds == [0, 1, 2]
    assert spec.eval_every == 50
    assert spec.baseline == "fixed"
    assert spec.target_accuracy == "auto"
    assert (spec.resources_per_trial.cpu, spec.resources_per_trial.gpu) == (1.0, 0.0)
    assert spec.max_failures == 2 and spec.bf16 is False
    assert spec.range_test is not None and spec.range_test.optimizer.model_dump() == {
        "name": "sgd",
        "options": {"momentum": 0.9},
    }
    # Defaults are not validated when filled in: a dump shows they would pass.
    assert parse_spec(json.loads(spec.model_dump_json())) == spec


# ---- names against the registries ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (study(dataset="mnist"), "dataset: unknown data set 'mnist'; known: digits, synthetic"),
        (study(model="vgg"), "model: unknown model 'vgg'; known: mlp, small_cnn"),
        (with_arm(1, optimizer="lion"), "arms[1].optimizer: unknown optimizer 'lion'; known: sgd"),
        (with_arm(1, policy="warmup"), "arms[1].policy: unknown policy 'warmup'; known: fixed"),
        (
            study(range_test={"optimizer": "lion"}),
            "range_test.optimizer: unknown optimizer 'lion'; known: sgd",
        ),
    ],
)
def test_unknown_names_list_the_known_ones(data: dict[str, Any], expected: str) -> None:
    assert expected in error(data)


def test_options_are_checked_against_the_declaration() -> None:
    message = error(study(dataset={"name": "digits", "test_fraction": "a quarter"}))
    assert "dataset: options.test_fraction must be a number, got 'a quarter'" in message
    message = error(study(model={"name": "mlp", "depth": 3}))
    assert "model: options: unknown parameter 'depth'; allowed: hidden" in message
    message = error(study(dataset="npz"))
    assert "dataset: options.path is required" in message


def test_component_must_be_a_name_or_mapping() -> None:
    assert "dataset: expected a name or a mapping with a 'name' key, got 3" in error(
        study(dataset=3)
    )
    assert "model: expected a name or a mapping with a 'name' key, got {'hidden': '8'}" in error(
        study(model={"hidden": "8"})
    )


# ---- policy parameters -------------------------------------------------------------------


def tri(**params: Any) -> dict[str, Any]:
    return {"name": "triangular", "base_lr": 0.001, "max_lr": 0.006, "step_size": 20} | params


def test_missing_parameter_without_a_source_is_an_error() -> None:
    policy = tri()
    del policy["step_size"]
    assert "arms[1].policy: params.step_size is required by triangular" in error(
        with_arm(1, policy=policy)
    )


def test_missing_bound_asks_for_a_number_auto_or_a_search() -> None:
    policy = tri()
    del policy["max_lr"]
    message = error(with_arm(1, policy=policy))
    assert (
        "arms[1].policy: params.max_lr is required by triangular (a number, 'auto' to take it "
        "from the range test, or a range in the arm's tuning.space to search it)"
    ) in message


def test_budget_parameter_may_be_left_to_the_runner() -> None:
    spec = parse_spec(with_arm(1, policy={"name": "cosine", "base_lr": 0.01, "max_lr": 0.1}))
    assert spec.arms[1].policy.params == {"base_lr": 0.01, "max_lr": 0.1}


def test_parameter_type_and_unknown_names() -> None:
    message = error(with_arm(1, policy=tri(step_size="long")))
    assert "arms[1].policy: params.step_size must be iterations (a whole number) or" in message
    assert "got 'long'" in message
    message = error(with_arm(1, policy=tri(gamma=0.9)))
    assert "arms[1].policy: params: unknown parameter 'gamma'; allowed: base_lr" in message


def test_auto_only_for_bounds() -> None:
    message = error(with_arm(1, policy=tri(step_size="auto")))
    assert (
        "arms[1].policy: params.step_size may not be 'auto': only bounds come from the range "
        "test (triangular: base_lr, max_lr)"
    ) in message


def test_auto_needs_a_range_test() -> None:
    message = error(study(range_test=None))
    assert "arms[0].policy.params.lr is 'auto' but the study has no range_test" in message
    assert "arms[1].policy.params.max_lr is 'auto' but the study has no range_test" in message


def test_auto_bounds_only_for_the_range_test_optimizer() -> None:
    message = error(with_arm(0, optimizer="adam"))
    assert (
        "arms[0].policy.params.lr is 'auto' but the range test uses 'sgd' and the arm 'adam'"
        in (message)
    )


def test_auto_arms() -> None:
    data = study()
    data["arms"].append({"name": "adam", "optimizer": "adam", "policy": tri()})
    spec = parse_spec(data)
    assert spec.auto_arms() == ["fixed", "tri"]
    assert spec.needs_range_test
    data["arms"] = data["arms"][2:]
    assert not parse_spec(data).needs_range_test


def test_step_size_in_epochs_is_kept_as_given() -> None:
    spec = parse_spec(with_arm(1, policy=tri(step_size={"epochs": 2})))
    assert spec.arms[1].policy.params["step_size"] == {"epochs": 2.0}


@pytest.mark.parametrize("value", [{"epochs": -1}, {"epochs": 0}, {"weeks": 2}, {"epochs": "2"}])
def test_bad_step_size_in_epochs(value: Any) -> None:
    message = error(with_arm(1, policy=tri(step_size=value)))
    assert (
        "arms[1].policy: params.step_size must be iterations (a whole number) or {epochs: k}"
        in (message)
    )
    assert repr(value) in message


def test_epochs_only_for_iteration_counts() -> None:
    policy = {"name": "exp", "lr": 0.1, "gamma": {"epochs": 2}}
    assert "arms[1].policy: params.gamma must be a number, got {'epochs': 2}" in error(
        with_arm(1, policy=policy)
    )


def test_concrete_policies_are_range_checked_now() -> None:
    message = error(with_arm(1, policy=tri(base_lr=0.01, max_lr=0.001)))
    assert "arms[1].policy: params.max_lr must be >= base_lr (0.01), got 0.001" in message
    message = error(with_arm(1, policy={"name": "exp", "lr": 0.1, "gamma": 1.5}))
    assert "arms[1].policy: params.gamma must be a finite number with 0 < gamma <= 1" in message


def test_none_for_a_none_default_means_the_default() -> None:
    spec = parse_spec(with_arm(1, policy=tri(step_size_down=None)))
    assert "step_size_down" not in spec.arms[1].policy.params


# ---- arms, baseline, target ----------------------------------------------------------------


def test_duplicate_arm_names() -> None:
    data = study()
    data["arms"][1]["name"] = "fixed"
    assert "arms: arm names must be unique: 'fixed' is arms[0] and arms[1]" in error(data)


def test_arm_name_pattern() -> None:
    message = error(with_arm(1, name="two words"))
    assert "arms[1].name: String should match pattern" in message
    assert "got 'two words'" in message


def test_baseline_must_be_an_arm() -> None:
    assert parse_spec(study(baseline="tri")).baseline == "tri"
    assert "baseline 'sgd' is not an arm; arms: fixed, tri" in error(study(baseline="sgd"))


@pytest.mark.parametrize("value", [0, 1.5, "best", float("nan"), True])
def test_bad_target_accuracy(value: Any) -> None:
    message = error(study(target_accuracy=value))
    assert f"target_accuracy: must be a number in (0, 1] or 'auto', got {value!r}" in message


def test_target_accuracy() -> None:
    assert parse_spec(study(target_accuracy=0.9)).target_accuracy == 0.9
    assert parse_spec(study(target_accuracy=1)).target_accuracy == 1.0


# ---- scalars -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"name": ""}, "name: String should have at least 1 character, got ''"),
        ({"name": "a\nb"}, "name: must be printable (no newlines or control characters)"),
        ({"name": "x" * 101}, "name: String should have at most 100 characters"),
        ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1, got 0"),
        ({"batch_size": 70000}, "batch_size: Input should be less than or equal to 65536"),
        ({"eval_every": 0}, "eval_every: Input should be greater than or equal to 1, got 0"),
        ({"max_failures": -1}, "max_failures: Input should be greater than or equal to 0"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted, got 'red'"),
        ({"resources_per_trial": {"cpu": 0}}, "resources_per_trial.cpu: Input should be greater"),
        (
            {"resources_per_trial": {"gpu": 1.5}},
            "resources_per_trial.gpu: gpu above 1 must be a whole number, got 1.5",
        ),
        ({"arms": []}, "arms: List should have at least 1 item"),
    ],
)
def test_bad_scalars(changes: dict[str, Any], expected: str) -> None:
    assert expected in error(study(**changes))


def test_missing_fields_are_named() -> None:
    data = study()
    del data["model"]
    assert "model: is required" in error(data).splitlines()


def test_fractional_resources() -> None:
    spec = parse_spec(study(resources_per_trial={"cpu": 0.5, "gpu": 0.25}))
    assert (spec.resources_per_trial.cpu, spec.resources_per_trial.gpu) == (0.5, 0.25)
    assert parse_spec(study(resources_per_trial={"gpu": 2})).resources_per_trial.gpu == 2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (study(resources_per_trial={"cpu": float("inf")}), "resources_per_trial.cpu: Input should"),
        (study(range_test={"max_lr": float("nan")}), "range_test.max_lr: Input should be a finite"),
        (with_arm(1, policy=tri(base_lr=float("inf"))), "params.base_lr must be a finite number"),
        (study(epochs=float("nan"), iterations=None), "epochs: Input should be a finite number"),
        (
            study(dataset={"name": "digits", "test_fraction": float("nan")}),
            "dataset: options.test_fraction must be a finite number, got nan",
        ),
    ],
)
def test_non_finite_numbers_are_refused(data: dict[str, Any], expected: str) -> None:
    assert expected in error(data)


def test_every_field_problem_is_reported_at_once() -> None:
    data = study(batch_size=0, baseline="none")
    data["arms"][1]["name"] = "no spaces"
    lines = error(data).splitlines()
    # Rules across fields (the baseline) wait until every field is valid.
    assert len(lines) == 2
    assert lines[0].startswith("batch_size:") and lines[1].startswith("arms[1].name:")


# ---- range test ----------------------------------------------------------------------------


def test_range_test_defaults_to_four_epochs() -> None:
    test = RangeTestSpec()
    assert (test.iterations, test.epochs, test.ramp, test.stop_factor) == (None, 4.0, "linear", 4)
    assert test.check_budget(21) == 84


def test_range_test_rules() -> None:
    message = error(study(range_test={"min_lr": 0.1, "max_lr": 0.01}))
    assert "range_test: max_lr (0.01) must be above min_lr (0.1)" in message
    message = error(study(range_test={"iterations": 100, "epochs": 2}))
    assert "range_test: give iterations (100) or epochs (2), not both" in message
    message = error(study(range_test={"ramp": "cubic"}))
    assert "range_test.ramp: Input should be 'linear' or 'exponential', got 'cubic'" in message
    message = error(study(range_test={"stop_factor": 1}))
    assert "range_test.stop_factor: Input should be greater than 1, got 1" in message


# ---- budgets and limits --------------------------------------------------------------------


def test_budget_is_iterations_or_epochs_exactly() -> None:
    message = error(study(epochs=5))
    assert "give the budget per trial as iterations or as epochs, exactly one" in message
    assert "iterations=100, epochs=5.0" in message
    assert "exactly one; got iterations=None, epochs=None" in error(study(iterations=None))
    spec = parse_spec(study(iterations=None, epochs=2.5))
    assert (spec.iterations, spec.epochs) == (None, 2.5)


def test_iterations_above_the_limit() -> None:
    message = error(study(iterations=200_001, eval_every=100))
    assert "iterations is 200001, above the limit of 200000 per trial" in message


def test_limits_come_from_the_validation_context() -> None:
    limits = Limits(max_iterations_per_trial=80, max_arms=1, max_seeds=1, max_eval_points=5)
    lines = error(study(), limits).splitlines()
    assert "seeds: a seed count must be between 1 and 1, got 2" in lines
    assert "arms: at most 1 arms, got 2" in lines
    data = study(seeds=1, arms=study()["arms"][:1])
    lines = error(data, limits).splitlines()
    assert "iterations is 100, above the limit of 80 per trial" in lines
    assert (
        "eval_every 10 gives 10 evaluations in 100 iterations, above the limit of 5 per trial; "
        "use eval_every >= 20"
    ) in lines
    # The same spec passes under the default limits.
    assert parse_spec(data).iterations == 100
    spec = StudySpec.model_validate(data, context={"limits": Limits(max_iterations_per_trial=100)})
    assert spec.iterations == 100


def test_arm_and_range_test_budgets_are_limited_too() -> None:
    data = with_arm(1, iterations=300)
    data["range_test"]["iterations"] = 400
    lines = error(data, Limits(max_iterations_per_trial=250)).splitlines()
    assert "arms[1].iterations is 300, above the limit of 250 per trial" in lines
    assert "range_test.iterations is 400, above the limit of 250 per trial" in lines


def test_check_budget_converts_epochs_and_checks_the_limit() -> None:
    spec = parse_spec(study(iterations=None, epochs=2.5))
    assert spec.check_budget(21) == 52
    with pytest.raises(SpecError) as info:
        spec.check_budget(1000, Limits(max_iterations_per_trial=2000))
    assert str(info.value) == (
        "iterations is 2500, above the limit of 2000 per trial "
        "(epochs 2.5 x 1000 iterations per epoch)"
    )
    assert parse_spec(study()).check_budget(1000) == 100
    with pytest.raises(ValueError, match="iterations_per_epoch must be >= 1, got 0"):
        spec.check_budget(0)


# ---- files ---------------------------------------------------------------------------------


def test_load_spec_reads_yaml_and_json(tmp_path: Path) -> None:
    data = study()
    (tmp_path / "s.json").write_text(json.dumps(data))
    (tmp_path / "s.yml").write_text(json.dumps(data))  # JSON is YAML too
    assert load_spec(tmp_path / "s.json") == load_spec(tmp_path / "s.yml") == parse_spec(data)


def test_yaml_reads_exponents_without_a_dot_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    text = json.dumps(study(range_test=None)).replace('"auto"', "1e-3").replace("0.9", "9E-1")
    path.write_text(text)
    spec = load_spec(path)
    assert spec.arms[0].policy.params["lr"] == 0.001
    assert spec.arms[0].optimizer.options == {"momentum": 0.9}


def test_load_spec_errors_name_the_file(tmp_path: Path) -> None:
    cases = {
        "spec.toml": (
            "name = 'x'",
            "spec.toml: unknown file type '.toml'; use .yaml, .yml or .json",
        ),
        "broken.yaml": ("arms: [\n  - name: a\n", "broken.yaml: not valid YAML: "),
        "broken.json": ("{", "broken.json: not valid JSON: "),
        "list.yaml": ("- a\n- b\n", "list.yaml: expected a mapping of fields, got list"),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SpecError) as info:
            load_spec(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path}/{expected}")
    with pytest.raises(SpecError, match=r"missing\.yaml: cannot read the file: .*No such file"):
        load_spec(tmp_path / "missing.yaml")


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: a\nseeds: [1, 2\nbatch_size: 3\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "line 3" in str(info.value)


def test_validation_errors_from_a_file_start_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    data = copy.deepcopy(study(batch_size=0))
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError) as info:
        load_spec(path, Limits(max_seeds=1))
    assert info.value.lines == [
        f"{path}: batch_size: Input should be greater than or equal to 1, got 0",
        f"{path}: seeds: a seed count must be between 1 and 1, got 2",
    ]


# ---- optimizers' package rules -------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd_schedulefree", "adamw_schedulefree"])
@pytest.mark.parametrize("policy", ["triangular", "triangular2", "exp_range"])
def test_a_cyclic_policy_on_a_schedule_free_optimizer_is_refused(
    optimizer: str, policy: str
) -> None:
    params = {"base_lr": 0.001, "max_lr": 0.01, "step_size": 20, "gamma": 0.99}
    if policy != "exp_range":
        del params["gamma"]
    message = error(with_arm(1, optimizer=optimizer, policy={"name": policy, **params}))
    assert (
        f"arms[1]: policy '{policy}' is cyclic and optimizer '{optimizer}' is schedule-free"
        in message
    )
    assert "use fixed" in message


def test_schedule_free_takes_a_fixed_lr_and_a_warm_up() -> None:
    arm = {
        "name": "sf",
        "optimizer": {"name": "adamw_schedulefree", "warmup_steps": 10},
        "policy": {"name": "fixed", "lr": 0.0025},
    }
    spec = parse_spec(study(arms=[arm], range_test=None))
    assert spec.arms[0].optimizer.options == {"warmup_steps": 10}


@pytest.mark.parametrize("optimizer", ["prodigy", "dadapt_sgd", "dadapt_adam", "dog", "ldog"])
def test_a_range_test_with_a_parameter_free_optimizer_is_refused(optimizer: str) -> None:
    data = study(range_test={"iterations": 50, "optimizer": optimizer})
    message = error(data)
    assert f"range_test.optimizer: '{optimizer}' is parameter-free" in message
    assert "such as sgd" in message


def test_parameter_free_arms_take_lr_as_a_multiplier_without_a_range_test() -> None:
    arms = [
        {"name": name, "optimizer": name, "policy": {"name": "wsd", "lr": 1.0, "warmup": 10}}
        for name in ("prodigy", "dadapt_adam", "dog", "ldog")
    ]
    assert [a.name for a in parse_spec(study(arms=arms, range_test=None)).arms] == [
        "prodigy",
        "dadapt_adam",
        "dog",
        "ldog",
    ]


def test_dadapt_sgd_cannot_start_a_warm_up_from_zero() -> None:
    arm = {"name": "d", "optimizer": "dadapt_sgd", "policy": {"name": "wsd", "lr": 1.0}}
    assert parse_spec(study(arms=[arm], range_test=None)).arms[0].policy.name == "wsd"
    arm["policy"] = {"name": "wsd", "lr": 1.0, "warmup": 5}
    message = error(study(arms=[arm], range_test=None))
    assert "arms[0]: policy.params.warmup is 5" in message
    assert "divides by zero; use warmup 0" in message


def test_cycled_momentum_on_a_schedule_free_optimizer_is_refused() -> None:
    arm = {
        "name": "sf",
        "optimizer": "sgd_schedulefree",
        "policy": {"name": "one_cycle", "max_lr": 0.5},
        "cycle_momentum": True,
    }
    message = error(study(arms=[arm], range_test=None))
    assert "arms[0]: cycle_momentum is true and optimizer 'sgd_schedulefree' is schedule-free" in (
        message
    )
