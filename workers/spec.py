"""The study spec: what a study trains and compares, checked before anything runs.

A `StudySpec` comes from a YAML or JSON file (`load_spec`), a dict or a REST body. Names are
checked against the registries of data sets, models, optimizers and policies, budgets against
`Limits`. Shorthands are normalised so a stored spec reads one way: `dataset: digits` and
`{name: digits}` both become `{"name": "digits", "options": {}}`, `seeds: 3` becomes
`[0, 1, 2]`, and an omitted baseline becomes the first arm's name.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from clr.params import Param, check_params
from clr.policies import CYCLIC_MODES, POLICIES, make_schedule
from workers.datasets import DATASETS, known_shape
from workers.models import MODELS, count_parameters
from workers.optimizers import OPTIMIZERS

AUTO = "auto"
# A policy parameter that a tuned arm's Optuna search chooses (see TuningSpec).
TUNED = "tuned"
# Iteration counts a policy may instead take in epochs, as {epochs: k}; the runner converts
# them once the data set's size is known.
EPOCH_PARAMS = frozenset({"step_size", "step_size_down"})
# numpy's seeding accepts 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
# Iteration counts no budget reaches (MAX_ITERATIONS_PER_TRIAL is far below): an upper bound
# for fields that the budget limits do not cover on their own.
MAX_EVAL_EVERY = 10_000_000


@dataclass(frozen=True)
class Limits:
    """What one study may ask for; the service sets these from its settings."""

    max_iterations_per_trial: int = 200_000
    max_arms: int = 20
    max_seeds: int = 10
    max_eval_points: int = 5_000  # evaluations per trial: iterations / eval_every
    max_tuning_trials: int = 200  # tuning trials of one tuned arm
    max_cpus_per_trial: float = 64.0  # resources_per_trial.cpu
    max_gpus_per_trial: float = 8.0  # resources_per_trial.gpu
    max_failures: int = 5  # retries of one failed trial
    max_model_parameters: int = 50_000_000
    max_synthetic_samples: int = 1_000_000  # train_size + test_size of the synthetic data set
    max_study_seconds: float = 24 * 3600.0  # wall-clock limit of a study, and of timeout_s


def _limits(info: ValidationInfo) -> Limits:
    context = info.context
    limits = context.get("limits") if isinstance(context, Mapping) else None
    return limits if isinstance(limits, Limits) else Limits()


class SpecError(ValueError):
    """An invalid spec; `str(e)` lists the problems, one a line, as "field.path: message"."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines

    @classmethod
    def from_validation_error(cls, error: ValidationError, source: str = "") -> SpecError:
        """Readable lines from pydantic's errors, each prefixed with `source` when given."""
        prefix = f"{source}: " if source else ""
        return cls([prefix + line for e in error.errors() for line in _describe(e)])


def _describe(error: Any) -> list[str]:
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    path = path.removeprefix(".")
    if error["type"] == "value_error":
        # Our own messages: they carry the value, and cross-field ones name their fields.
        messages = str(error["ctx"]["error"]).splitlines()
    elif error["type"] == "missing":
        messages = ["is required"]
    else:
        got = repr(error["input"])
        got = got if len(got) <= 80 else got[:77] + "..."
        messages = [f"{error['msg']}, got {got}"]
    return [f"{path}: {m}" if path else m for m in messages]


# ---- named components: data set, model, optimizer ------------------------------------------


def _named_form(key: str) -> Callable[[Any], Any]:
    """Normaliser of `name`, `{name, **values}` and `{name, key: values}` to the last form."""

    def normalise(value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value, key: {}}
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, Mapping) or "name" not in value:
            raise ValueError(f"expected a name or a mapping with a 'name' key, got {value!r}")
        rest = {k: v for k, v in value.items() if k != "name"}
        if set(rest) == {key} and isinstance(rest[key], Mapping):
            return dict(value)
        return {"name": value["name"], key: rest}

    return normalise


class Component(BaseModel):
    """A registry entry by name with its options: a data set, a model or an optimizer."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="name in the registry (see the catalog)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="the entry's declared options; omitted ones default"
    )


def _registered(kind: str, registry: Mapping[str, Any]) -> Callable[[Component], Component]:
    """Check of a component's name and options against `registry`."""

    def check(component: Component) -> Component:
        entry = registry.get(component.name)
        if entry is None:
            raise ValueError(f"unknown {kind} {component.name!r}; known: {', '.join(registry)}")
        checked = check_params("options", entry.params, component.options)
        # Keep only what was given: defaults stay the registry's, and a dump re-validates.
        options = {k: v for k, v in checked.items() if k in component.options}
        return Component(name=component.name, options=options)

    return check


_COMPONENT_FORM = BeforeValidator(_named_form("options"), json_schema_input_type=str | Component)
DatasetRef = Annotated[
    Component, _COMPONENT_FORM, AfterValidator(_registered("data set", DATASETS))
]
ModelRef = Annotated[Component, _COMPONENT_FORM, AfterValidator(_registered("model", MODELS))]
OptimizerRef = Annotated[
    Component, _COMPONENT_FORM, AfterValidator(_registered("optimizer", OPTIMIZERS))
]


# ---- LR policy -------------------------------------------------------------------------------


class PolicySpec(BaseModel):
    """An LR policy by name with its parameters; bounds may be "auto", step sizes in epochs."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="policy name: " + ", ".join(POLICIES))
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "the policy's parameters. lr, base_lr and max_lr may be 'auto' (from the range "
            "test); step_size may be {epochs: k}; total_iterations defaults to the trial's budget"
        ),
    )

    def has_auto(self) -> bool:
        """Whether some bound is to come from the range test."""
        return any(_is_auto(v) for v in self.params.values())


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == AUTO


def _is_tuned(value: Any) -> bool:
    return isinstance(value, str) and value == TUNED


def _epochs(key: str, value: Any) -> dict[str, float]:
    epochs: Any = value.get("epochs") if isinstance(value, Mapping) else None
    valid = (
        isinstance(value, Mapping)
        and set(value) == {"epochs"}
        and isinstance(epochs, (int, float))
        and not isinstance(epochs, bool)
        and math.isfinite(epochs)
        and epochs > 0
    )
    if not valid:
        raise ValueError(
            f"params.{key} must be iterations (a whole number) or {{epochs: k}} with a "
            f"number k > 0, got {value!r}"
        )
    return {"epochs": float(epochs)}


def _check_policy(policy: PolicySpec) -> PolicySpec:
    entry = POLICIES.get(policy.name)
    if entry is None:
        raise ValueError(f"unknown policy {policy.name!r}; known: {', '.join(POLICIES)}")
    declared: dict[str, Param] = {p.name: p for p in entry.params}
    bounds = [p.name for p in entry.params if p.source == "bounds"]
    deferred: dict[str, Any] = {}  # values the runner resolves: "auto" and epoch counts
    plain: dict[str, Any] = {}
    for key, value in policy.params.items():
        param = declared.get(key)
        if param is None:
            plain[key] = value  # check_params refuses it, naming the known ones
        elif value is None and param.default is None:
            continue  # a None for a None default means that default
        elif _is_tuned(value):
            if param.type not in ("float", "int") or param.source == "budget":
                raise ValueError(
                    f"params.{key} cannot be tuned: only numbers the spec may give are "
                    f"searched ({policy.name}: {', '.join(entry.tunable())})"
                )
            deferred[key] = TUNED
        elif _is_auto(value):
            if param.source != "bounds":
                allowed = ", ".join(bounds) or "none of its parameters"
                raise ValueError(
                    f"params.{key} may not be 'auto': only bounds come from the range test "
                    f"({policy.name}: {allowed})"
                )
            deferred[key] = AUTO
        elif key in EPOCH_PARAMS and not isinstance(value, (int, float)):
            deferred[key] = _epochs(key, value)
        else:
            plain[key] = value
    checked = check_params("params", entry.params, plain, allow_missing=True)
    given = deferred.keys() | plain.keys()
    for p in entry.params:
        if p.required and p.name not in policy.params and p.source != "budget":
            hint = (
                " (a number, 'auto' to take it from the range test, or a range in the arm's "
                "tuning.space to search it)"
                if p.source
                else ""
            )
            raise ValueError(f"params.{p.name} is required by {policy.name}{hint}")
    params = {k: deferred[k] if k in deferred else checked[k] for k in declared if k in given}
    if not deferred and all(p.name in params for p in entry.params if p.required):
        # Everything is concrete: check ranges (base_lr <= max_lr, 0 < gamma <= 1...) now,
        # not after a range test and hours of training.
        try:
            make_schedule(policy.name, params)
        except ValueError as e:
            raise ValueError(f"params.{e}") from None
    return PolicySpec(name=policy.name, params=params)


def _is_int(policy: str, key: str) -> bool:
    return any(p.name == key and p.type == "int" for p in POLICIES[policy].params)


PolicyRef = Annotated[
    PolicySpec,
    BeforeValidator(_named_form("params"), json_schema_input_type=str | PolicySpec),
    AfterValidator(_check_policy),
]


# ---- the study -------------------------------------------------------------------------------


class Resources(BaseModel):
    """What one trial holds on a Ray node; fractions let small trials share a device."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    cpu: float = Field(1.0, gt=0, description="CPU cores per trial (fractions allowed)")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial (fractions below 1 allowed)")

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, gpu: float) -> float:
        # Ray schedules fractions of one GPU only.
        if gpu > 1 and gpu != int(gpu):
            raise ValueError(f"gpu above 1 must be a whole number, got {gpu!r}")
        return gpu


class RangeTestSpec(BaseModel):
    """The LR range test: raise the LR from min_lr to max_lr and watch accuracy and loss."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_lr: float = Field(1e-4, gt=0, le=1e4, description="LR at the first iteration")
    max_lr: float = Field(1.0, gt=0, le=1e4, description="LR at the last iteration (> min_lr)")
    iterations: int | None = Field(None, ge=2, description="length of the test (or epochs)")
    epochs: float | None = Field(
        None, gt=0, le=1000, description="length in epochs (or iterations); default 4 epochs"
    )
    ramp: Literal["linear", "exponential"] = Field(
        "linear", description="linear (the paper's) or exponential (same time per decade)"
    )
    optimizer: OptimizerRef = Field(
        default_factory=lambda: Component(name="sgd", options={"momentum": 0.9}),
        description="optimizer of the test; 'auto' bounds go only to arms using the same one",
    )
    eval_every: int | None = Field(
        None,
        ge=1,
        le=MAX_EVAL_EVERY,
        description="iterations between accuracy evaluations; default: the runner's",
    )
    stop_factor: float = Field(
        4.0, gt=1, le=1e6, description="stop once the smoothed loss exceeds this times its minimum"
    )

    @field_validator("optimizer")
    @classmethod
    def _sweepable(cls, optimizer: Component) -> Component:
        if OPTIMIZERS[optimizer.name].stepping.parameter_free:
            raise ValueError(
                f"{optimizer.name!r} is parameter-free: its lr multiplies a step size it "
                "estimates, so sweeping the lr finds no bounds; run the range test with "
                "an optimizer that takes its lr as given, such as sgd"
            )
        return optimizer

    @model_validator(mode="after")
    def _check(self) -> RangeTestSpec:
        if self.max_lr <= self.min_lr:
            raise ValueError(f"max_lr ({self.max_lr!r}) must be above min_lr ({self.min_lr!r})")
        if self.iterations is not None and self.epochs is not None:
            raise ValueError(
                f"give iterations ({self.iterations}) or epochs ({self.epochs:g}), not both"
            )
        if self.iterations is None and self.epochs is None:
            self.epochs = 4.0  # "a few epochs" (Smith 2017, section 3.3)
        return self

    def check_budget(self, iterations_per_epoch: int, limits: Limits | None = None) -> int:
        """The test's length in iterations, checked against `limits`."""
        return _resolve_budget(
            "range_test.",
            self.iterations,
            self.epochs,
            self.eval_every,
            iterations_per_epoch,
            limits or Limits(),
            minimum=2,
        )


class SearchRange(BaseModel):
    """The range a tuned parameter is searched in: [low, high], on a log scale or not."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    low: float = Field(ge=-1e9, le=1e9, description="smallest value tried")
    high: float = Field(ge=-1e9, le=1e9, description="largest value tried (> low)")
    log: bool | None = Field(
        None,
        description="search on a log scale; default: yes for learning rates, no otherwise",
    )


def search_log(param: Param, bounds: SearchRange) -> bool:
    """Whether `param` is searched on a log scale: as given, else for learning rates."""
    return bounds.log if bounds.log is not None else param.source == "bounds"


class TuningSpec(BaseModel):
    """How a tuned arm's parameters are searched before its final trials.

    Optuna's TPE sampler (seeded) proposes values; each tuning trial trains up to
    `max_iterations` on a validation split of the training set, and ASHA stops the
    unpromising ones early at rungs of grace_period x reduction_factor^k iterations. The
    best trial that ran to `max_iterations` gives the values the final trials use.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    trials: int = Field(description="tuning trials to run (>= 1), early-stopped ones included")
    space: dict[str, SearchRange] = Field(
        description="policy parameter -> {low, high, log}: what is searched, e.g. "
        "{lr: {low: 0.0001, high: 1}}"
    )
    max_iterations: int | None = Field(
        None, ge=1, description="budget of one tuning trial; default: the arm's budget"
    )
    grace_period: int | None = Field(
        None,
        ge=1,
        le=MAX_EVAL_EVERY,
        description="iterations before ASHA may stop a trial; default: max_iterations / "
        "reduction_factor^2",
    )
    reduction_factor: int = Field(
        3, ge=2, le=100, description="ASHA keeps the best 1/reduction_factor at each rung"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the sampler (TPE)")
    validation_fraction: float = Field(
        0.2,
        gt=0,
        le=0.5,
        description="share of the training set held out to score tuning trials; the test "
        "set never chooses",
    )
    start_with: list[dict[str, float]] = Field(
        default_factory=list,
        description="values to try first (e.g. a framework's default lr), each a full "
        "point of the space",
    )

    @field_validator("trials", mode="before")
    @classmethod
    def _trials(cls, trials: Any, info: ValidationInfo) -> Any:
        limit = _limits(info).max_tuning_trials
        whole = isinstance(trials, int) and not isinstance(trials, bool)
        if not whole or not 1 <= trials <= limit:
            raise ValueError(
                f"must be a whole number of tuning trials between 1 and {limit}, got {trials!r}"
            )
        return trials

    @field_validator("space")
    @classmethod
    def _space(cls, space: dict[str, SearchRange]) -> dict[str, SearchRange]:
        if not space:
            raise ValueError("give at least one parameter to search, e.g. {lr: {low, high}}")
        problems = []
        for name, bounds in space.items():
            if not bounds.low < bounds.high:
                problems.append(
                    f"{name}: empty search range: low ({bounds.low!r}) must be below "
                    f"high ({bounds.high!r})"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return space


class ArmSpec(BaseModel):
    """One training recipe: an optimizer and an LR policy."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="unique within the study: 1-64 of A-Z a-z 0-9 _ . -",
    )
    optimizer: OptimizerRef = Field(description="optimizer name or {name, **options}")
    policy: PolicyRef = Field(description="policy name or {name, **params}")
    cycle_momentum: bool = Field(
        False, description="cycle momentum inversely to the LR (cyclic policies)"
    )
    iterations: int | None = Field(
        None, ge=1, description="this arm's budget per trial; default: the study's"
    )
    tuning: TuningSpec | None = Field(
        None,
        description="search some policy parameters with Optuna before the final trials; "
        "they are then 'tuned' in policy.params",
    )

    @model_validator(mode="before")
    @classmethod
    def _mark_tuned(cls, data: Any) -> Any:
        """Parameters in tuning.space read as `tuned` in policy.params, unless given there."""
        if not isinstance(data, Mapping):
            return data
        tuning, policy = data.get("tuning"), data.get("policy")
        space = tuning.get("space") if isinstance(tuning, Mapping) else None
        if not isinstance(space, Mapping) or policy is None:
            return data
        try:
            form = _named_form("params")(policy)
        except ValueError:
            return data  # the policy's own validation names the problem
        form = form.model_dump() if isinstance(form, BaseModel) else dict(form)
        given, name = form.get("params") or {}, form.get("name")
        if not isinstance(given, Mapping) or not isinstance(name, str) or name not in POLICIES:
            return data  # the policy's own validation names the problem
        params = dict(given)
        declared = {p.name for p in POLICIES[name].params}
        for key in space:
            if key in declared:  # an undeclared one is named by _check_tuning
                params.setdefault(key, TUNED)
        return {**data, "policy": {**form, "params": params}}

    @model_validator(mode="after")
    def _check_tuning(self) -> ArmSpec:
        tuned = [k for k, v in self.policy.params.items() if _is_tuned(v)]
        if self.tuning is None:
            if tuned:
                raise ValueError(
                    f"policy.params.{tuned[0]} is 'tuned' but the arm has no tuning section; "
                    f"add tuning: {{trials: N, space: {{{tuned[0]}: {{low: .., high: ..}}}}}}"
                )
            return self
        problems = []
        declared = {p.name: p for p in POLICIES[self.policy.name].params}
        tunable = POLICIES[self.policy.name].tunable()
        for key in self.tuning.space:
            if key not in declared or key not in tunable:
                problems.append(
                    f"tuning.space.{key}: {self.policy.name} has no parameter {key!r} to "
                    f"search; it may search: {', '.join(tunable)}"
                )
            elif not _is_tuned(self.policy.params.get(key)):
                problems.append(
                    f"tuning.space.{key}: policy.params also gives {key} = "
                    f"{self.policy.params.get(key)!r}; leave it out there to search it"
                )
            elif search_log(declared[key], self.tuning.space[key]) and (
                self.tuning.space[key].low <= 0
            ):
                problems.append(
                    f"tuning.space.{key}: {key} is searched on a log scale, which needs "
                    f"low > 0, got low={self.tuning.space[key].low!r}"
                )
            elif declared[key].type == "int":
                bounds = self.tuning.space[key]
                if bounds.low != int(bounds.low) or bounds.high != int(bounds.high):
                    problems.append(
                        f"tuning.space.{key}: {key} is a whole number of iterations, so low "
                        f"and high must be whole numbers, got {bounds.low!r}..{bounds.high!r}"
                    )
        for key in tuned:
            if key not in self.tuning.space:
                problems.append(
                    f"policy.params.{key} is 'tuned' but tuning.space has no range for it"
                )
        for i, point in enumerate(self.tuning.start_with):
            if set(point) != set(self.tuning.space):
                problems.append(
                    f"tuning.start_with[{i}] must give exactly {', '.join(self.tuning.space)}, "
                    f"got {', '.join(point) or 'nothing'}"
                )
                continue
            for key, value in point.items():
                bounds = self.tuning.space[key]
                if not bounds.low <= value <= bounds.high:
                    problems.append(
                        f"tuning.start_with[{i}].{key} = {value!r} is outside its range "
                        f"{bounds.low!r}..{bounds.high!r}"
                    )
        tuning = self.tuning
        if (
            tuning.grace_period is not None
            and tuning.max_iterations is not None
            and tuning.grace_period >= tuning.max_iterations
        ):
            problems.append(
                f"tuning.grace_period ({tuning.grace_period}) must be below "
                f"tuning.max_iterations ({tuning.max_iterations})"
            )
        if not problems:
            problems += self._range_ends_problems(tuned)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _check_optimizer_policy(self) -> ArmSpec:
        """Pairs an optimizer's package rules out; what each is refused for says why."""
        optimizer, policy = self.optimizer.name, self.policy.name
        if OPTIMIZERS[optimizer].stepping.schedule_free and policy in CYCLIC_MODES:
            raise ValueError(
                f"policy {policy!r} is cyclic and optimizer {optimizer!r} is schedule-free: "
                "it averages its iterates in place of a schedule, and its package advises "
                "no schedule beyond a warm-up; use fixed (with the optimizer's warmup_steps)"
            )
        if OPTIMIZERS[optimizer].stepping.schedule_free and self.cycle_momentum:
            raise ValueError(
                f"cycle_momentum is true and optimizer {optimizer!r} is schedule-free: its "
                "momentum weighs the switch between training and evaluation weights, which "
                "must stay fixed; set cycle_momentum to false"
            )
        if optimizer == "dadapt_sgd" and policy == "wsd" and self.policy.params.get("warmup"):
            raise ValueError(
                f"policy.params.warmup is {self.policy.params['warmup']!r}, and a warm-up "
                "from 0 gives dadapt_sgd an lr of 0 at its first step, where it divides "
                "by zero; use warmup 0"
            )
        return self

    def _range_ends_problems(self, tuned: list[str]) -> list[str]:
        """Both ends of every range must make a valid schedule (0 < gamma <= 1, ...).

        Checked now when every other parameter is concrete, not after hours of training.
        """
        assert self.tuning is not None
        rest = {k: v for k, v in self.policy.params.items() if k not in tuned}
        if any(_is_auto(v) or isinstance(v, Mapping) for v in rest.values()):
            return []
        for p in POLICIES[self.policy.name].params:
            if p.source == "budget" and p.name not in rest:
                rest[p.name] = 1_000
        problems = []
        for end in ("low", "high"):
            values = {k: getattr(self.tuning.space[k], end) for k in tuned}
            values = {k: int(v) if _is_int(self.policy.name, k) else v for k, v in values.items()}
            try:
                make_schedule(self.policy.name, {**rest, **values})
            except ValueError as e:
                problems.append(f"tuning.space: at the range's {end} end, {e}")
        return problems


class StudySpec(BaseModel):
    """A study: one data set and model, several arms, each trained with several seeds."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "name": "digits: triangular vs fixed",
                    "dataset": "digits",
                    "model": {"name": "mlp", "hidden": "128"},
                    "batch_size": 64,
                    "iterations": 600,
                    "eval_every": 25,
                    "seeds": 3,
                    "range_test": {"min_lr": 0.001, "max_lr": 2.0, "iterations": 300},
                    "arms": [
                        {
                            "name": "fixed",
                            "optimizer": {"name": "sgd", "momentum": 0.9},
                            "policy": {"name": "fixed", "lr": "auto"},
                        },
                        {
                            "name": "triangular",
                            "optimizer": {"name": "sgd", "momentum": 0.9},
                            "policy": {
                                "name": "triangular",
                                "base_lr": "auto",
                                "max_lr": "auto",
                                "step_size": {"epochs": 2},
                            },
                        },
                    ],
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=100, description="a title for people")
    dataset: DatasetRef = Field(description="data set name or {name, **options}")
    model: ModelRef = Field(description="model name or {name, **options}")
    batch_size: int = Field(ge=1, le=65536, description="examples per iteration")
    iterations: int | None = Field(
        None, ge=1, description="budget per trial in iterations (give this or epochs)"
    )
    epochs: float | None = Field(
        None,
        gt=0,
        le=100_000,
        description="budget per trial in epochs (give this or iterations)",
    )
    eval_every: int = Field(
        50, ge=1, le=MAX_EVAL_EVERY, description="iterations between evaluations"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        description="a count n (seeds 0..n-1) or a list of distinct seeds >= 0",
    )
    range_test: RangeTestSpec | None = Field(
        None, description="the LR range test; required when an arm has an 'auto' bound"
    )
    arms: list[ArmSpec] = Field(min_length=1, description="the recipes compared")
    baseline: str | None = Field(
        None, description="the arm the others are compared with; default: the first"
    )
    target_accuracy: float | Literal["auto"] = Field(
        "auto",
        description="accuracy in (0, 1] whose first crossing counts; 'auto': the baseline's "
        "final mean accuracy",
    )
    resources_per_trial: Resources = Field(default_factory=Resources)
    max_failures: int = Field(2, ge=0, description="retries of a failed trial (from checkpoint)")
    timeout_s: float | None = Field(
        None,
        gt=0,
        description="wall-clock limit of the study in seconds, up to the server's "
        "MAX_STUDY_SECONDS (its default); past it the study fails",
    )
    bf16: bool = Field(False, description="train in bfloat16 autocast where the device has it")

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        if not name.isprintable():
            raise ValueError(f"must be printable (no newlines or control characters), got {name!r}")
        return name

    @field_validator("seeds", mode="before", json_schema_input_type=int | list[int])
    @classmethod
    def _seed_count(cls, seeds: Any, info: ValidationInfo) -> Any:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            limit = _limits(info).max_seeds
            # Checked before the list is built: a count of 10**10 must not take the memory.
            if not 1 <= seeds <= limit:
                raise ValueError(f"a seed count must be between 1 and {limit}, got {seeds}")
            return list(range(seeds))
        return seeds

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int], info: ValidationInfo) -> list[int]:
        limit = _limits(info).max_seeds
        if not 1 <= len(seeds) <= limit:
            raise ValueError(f"give 1 to {limit} seeds, got {len(seeds)}: {seeds}")
        bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"must be in 0..{MAX_SEED}, got {bad[0]}")
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            raise ValueError(f"must be distinct, got {repeated[0]} more than once")
        return seeds

    @field_validator("arms")
    @classmethod
    def _distinct_arms(cls, arms: list[ArmSpec], info: ValidationInfo) -> list[ArmSpec]:
        limit = _limits(info).max_arms
        if len(arms) > limit:
            raise ValueError(f"at most {limit} arms, got {len(arms)}")
        names = [arm.name for arm in arms]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(
                    f"arm names must be unique: {name!r} is arms[{names.index(name)}] and arms[{i}]"
                )
        return arms

    @field_validator("resources_per_trial")
    @classmethod
    def _resources_limit(cls, resources: Resources, info: ValidationInfo) -> Resources:
        limits = _limits(info)
        problems = [
            f"{key} is {value:g}, above the limit of {limit:g} per trial ({setting})"
            for key, value, limit, setting in (
                ("cpu", resources.cpu, limits.max_cpus_per_trial, "MAX_CPUS_PER_TRIAL"),
                ("gpu", resources.gpu, limits.max_gpus_per_trial, "MAX_GPUS_PER_TRIAL"),
            )
            if value > limit
        ]
        if problems:
            raise ValueError("\n".join(problems))
        return resources

    @field_validator("max_failures")
    @classmethod
    def _failures_limit(cls, failures: int, info: ValidationInfo) -> int:
        limit = _limits(info).max_failures
        if failures > limit:
            raise ValueError(f"is {failures}, above the limit of {limit} (MAX_FAILURES)")
        return failures

    @field_validator("timeout_s")
    @classmethod
    def _timeout_limit(cls, timeout: float | None, info: ValidationInfo) -> float | None:
        limit = _limits(info).max_study_seconds
        if timeout is not None and timeout > limit:
            raise ValueError(f"is {timeout:g}, above the limit of {limit:g} s (MAX_STUDY_SECONDS)")
        return timeout

    @field_validator("target_accuracy", mode="before")
    @classmethod
    def _accuracy(cls, value: Any) -> Any:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (_is_auto(value) or (number and math.isfinite(value) and 0 < value <= 1)):
            raise ValueError(f"must be a number in (0, 1] or 'auto', got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_study(self, info: ValidationInfo) -> StudySpec:
        """Rules across fields; every problem found is reported, one a line."""
        limits = _limits(info)
        problems: list[str] = []
        if (self.iterations is None) == (self.epochs is None):
            problems.append(
                "give the budget per trial as iterations or as epochs, exactly one; got "
                f"iterations={self.iterations!r}, epochs={self.epochs!r}"
            )
        budgets: list[tuple[str, int | None, int | None]] = [("", self.iterations, self.eval_every)]
        budgets += [(f"arms[{i}].", a.iterations, self.eval_every) for i, a in enumerate(self.arms)]
        if self.range_test is not None:
            rt = self.range_test
            budgets.append(("range_test.", rt.iterations, rt.eval_every))
        for prefix, iterations, eval_every in budgets:
            if iterations is not None:
                problems += _budget_problems(prefix, iterations, eval_every, limits)
        for i, arm in enumerate(self.arms):
            if arm.tuning is not None and arm.tuning.max_iterations is not None:
                problems += [
                    p.replace("iterations is", "tuning.max_iterations is", 1)
                    for p in _budget_problems(
                        f"arms[{i}].", arm.tuning.max_iterations, self.eval_every, limits
                    )
                ]
        names = [arm.name for arm in self.arms]
        if self.baseline is None:
            self.baseline = names[0]
        elif self.baseline not in names:
            problems.append(f"baseline {self.baseline!r} is not an arm; arms: {', '.join(names)}")
        problems += self._auto_problems()
        problems += self._size_problems(limits)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _size_problems(self, limits: Limits) -> list[str]:
        """The data set and the model within `limits`, where the options alone tell."""
        options = self.dataset.options
        if self.dataset.name == "synthetic":
            defaults = {p.name: p.default for p in DATASETS["synthetic"].params}
            samples = sum(options.get(k, defaults[k]) for k in ("train_size", "test_size"))
            if samples > limits.max_synthetic_samples:
                return [
                    f"dataset.options: train_size + test_size is {samples}, above the limit "
                    f"of {limits.max_synthetic_samples} samples (MAX_SYNTHETIC_SAMPLES)"
                ]
        shape = known_shape(self.dataset.name, options)
        if shape is None:
            return []  # the driver checks the model once the files give the shape
        problem = self.model_size_problem(*shape, limits)
        return [problem] if problem else []

    def model_size_problem(
        self, input_shape: tuple[int, ...], num_classes: int, limits: Limits
    ) -> str | None:
        """Why the model is too large for `limits` on inputs of this shape (None: it isn't)."""
        try:
            count = count_parameters(
                self.model.name,
                self.model.options,
                input_shape=input_shape,
                num_classes=num_classes,
            )
        except ValueError as e:
            return f"model: {e}"
        if count > limits.max_model_parameters:
            return (
                f"model: {self.model.name} has {count} parameters on inputs shaped "
                f"{tuple(input_shape)} with {num_classes} classes, above the limit of "
                f"{limits.max_model_parameters} (MAX_MODEL_PARAMETERS)"
            )
        return None

    def _auto_problems(self) -> list[str]:
        problems = []
        for i, arm in enumerate(self.arms):
            for key, value in arm.policy.params.items():
                if not _is_auto(value):
                    continue
                where = f"arms[{i}].policy.params.{key} is 'auto'"
                if self.range_test is None:
                    problems.append(f"{where} but the study has no range_test")
                elif arm.optimizer.name != self.range_test.optimizer.name:
                    # Bounds found with one optimizer don't carry to another (Adam's LRs
                    # are about ten times smaller than SGD's).
                    problems.append(
                        f"{where} but the range test uses {self.range_test.optimizer.name!r} "
                        f"and the arm {arm.optimizer.name!r}; give the bounds or use "
                        f"{self.range_test.optimizer.name!r}"
                    )
        return problems

    def auto_arms(self) -> list[str]:
        """Names of the arms taking some bound from the range test."""
        return [arm.name for arm in self.arms if arm.policy.has_auto()]

    @property
    def needs_range_test(self) -> bool:
        """Whether the range test must run: some arm takes its bounds from it."""
        return bool(self.auto_arms())

    def check_budget(self, iterations_per_epoch: int, limits: Limits | None = None) -> int:
        """The study's iterations per trial (an arm's own `iterations` wins for that arm).

        An epoch budget is checked against `limits` here, once the data set's size is known.
        """
        return _resolve_budget(
            "",
            self.iterations,
            self.epochs,
            self.eval_every,
            iterations_per_epoch,
            limits or Limits(),
        )


# ---- budgets ---------------------------------------------------------------------------------


def _budget_problems(
    prefix: str, iterations: int, eval_every: int | None, limits: Limits
) -> list[str]:
    """Why a budget of `iterations` at `prefix` breaks `limits` (empty when it doesn't)."""
    problems = []
    if iterations > limits.max_iterations_per_trial:
        problems.append(
            f"{prefix}iterations is {iterations}, above the limit of "
            f"{limits.max_iterations_per_trial} per trial"
        )
    if eval_every is not None and math.ceil(iterations / eval_every) > limits.max_eval_points:
        floor = math.ceil(iterations / limits.max_eval_points)
        problems.append(
            f"{prefix}eval_every {eval_every} gives {math.ceil(iterations / eval_every)} "
            f"evaluations in {iterations} iterations, above the limit of "
            f"{limits.max_eval_points} per trial; use eval_every >= {floor}"
        )
    return problems


def _resolve_budget(
    prefix: str,
    iterations: int | None,
    epochs: float | None,
    eval_every: int | None,
    iterations_per_epoch: int,
    limits: Limits,
    minimum: int = 1,
) -> int:
    if isinstance(iterations_per_epoch, bool) or iterations_per_epoch < 1:
        raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch!r}")
    if iterations is None:
        assert epochs is not None  # the validators leave exactly one of the two
        iterations = max(minimum, round(epochs * iterations_per_epoch))
        detail = f" ({prefix}epochs {epochs:g} x {iterations_per_epoch} iterations per epoch)"
    else:
        detail = ""
    problems = _budget_problems(prefix, iterations, eval_every, limits)
    if problems:
        raise SpecError([p + detail for p in problems])
    return iterations


# ---- files -----------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads 1e-3 (no dot) as a float, as YAML 1.2 and JSON do.

    PyYAML follows YAML 1.1 and would read it as the string "1e-3", which a learning rate
    must not be.
    """


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_spec(path: str | Path, limits: Limits | None = None) -> StudySpec:
    """Read and validate a study spec from a .yaml/.yml or .json file.

    Raises SpecError, whose lines start with the path, for any problem.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise SpecError([f"{path}: unknown file type {suffix!r}; use .yaml, .yml or .json"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError([f"{path}: cannot read the file: {e}"]) from e
    try:
        data = json.loads(text) if suffix == ".json" else yaml.load(text, Loader=_YamlLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "JSON" if suffix == ".json" else "YAML"
        raise SpecError([f"{path}: not valid {kind}: {e}"]) from e
    return parse_spec(data, limits, source=str(path))


def parse_spec(data: Any, limits: Limits | None = None, source: str = "") -> StudySpec:
    """Validate a spec given as a mapping (parsed YAML/JSON, a dict); raise SpecError.

    `source` (a file name) starts every line of the error when given.
    """
    prefix = f"{source}: " if source else ""
    if not isinstance(data, Mapping):
        raise SpecError([f"{prefix}expected a mapping of fields, got {type(data).__name__}"])
    try:
        return StudySpec.model_validate(data, context={"limits": limits or Limits()})
    except ValidationError as e:
        raise SpecError.from_validation_error(e, source) from None
