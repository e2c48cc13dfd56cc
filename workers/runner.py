"""Runs a whole study on Ray Tune: the range test trial, then every arm with every seed.

Results leave through the caller's `ResultSink`, as they happen: a Tune callback in the
driver (`workers.tune_events`) turns each trial's reports into events. Trials
(`workers.trainables`) report plain dicts; arm trials checkpoint plain dicts every few
evaluations, so a trial whose process dies resumes from its last checkpoint and reports the
same curve (points already sent are not sent again). What each trial runs is planned in
`workers.planning`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from clr.bounds import Bounds, UnusableRangeTest, suggest_bounds
from clr.range_test import RangeTestResult
from workers.datasets import Dataset, load_dataset
from workers.events import (
    ArmsResolved,
    BoundsFound,
    PlannedTuning,
    RangeTestEnded,
    ResultSink,
    StudyPlanned,
)
from workers.planning import (
    arm_budgets,
    arm_trial_config,
    planned_trials,
    range_test_config,
    resolve_arm,
    resolve_arms,
    tuning_trial_config,
)
from workers.spec import ArmSpec, Limits, StudySpec
from workers.states import TerminalStudyStatus
from workers.trainables import arm_trainable, flatten, range_test_trainable, tuning_trainable
from workers.tune_events import (
    CancelStopper,
    EventForwarder,
    ForwardingCallback,
    PlacementWatch,
    placement_problem,
)
from workers.tuning import TuningFailed, TuningPlan, open_storage, run_search

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's console tables: we show our own
# Of Tune's default loggers only the JSON one is kept (`_fit` adds it): TensorBoard's and the
# CSV one cannot hold the lists of points a report carries.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


class StudyFailed(RuntimeError):
    """The study cannot go on (e.g. the range test gave no usable bounds)."""


@dataclass(frozen=True)
class RunOptions:
    """Where and how a study runs; none of it changes its results."""

    storage_path: str  # Tune's checkpoints; on a cluster, storage every node reaches
    ray_address: str | None = None  # None: the Ray this process started, or a local one
    data_root: str | None = None
    experiment: str = "study"  # folder name under storage_path
    limits: Limits = field(default_factory=Limits)
    max_concurrent_trials: int | None = None  # None: as many as the resources allow
    # Seconds between an arm trial's checkpoints, at the least: a crashed trial repeats at
    # most this much work, and short trials don't spend their time writing checkpoints.
    checkpoint_every_s: float = 10.0
    # Where tuned arms keep their Optuna studies: an SQLAlchemy URL (the service's database,
    # a SQLite file), or None for memory. A study run again on the same storage and prefix
    # finishes its searches instead of starting them over.
    tuning_storage: str | None = None
    tuning_study_prefix: str | None = None  # default: `experiment`; names are f"{prefix}/{arm}"
    # Seconds trials may wait with none running while no live node can hold one (a node
    # left mid-study) before the study fails.
    placement_grace_s: float = 300.0
    # Test hook: trial_id -> iteration at which that trial's process exits once, abruptly
    # (f"{arm}-tuning" names a tuned arm's search: its first trial past it dies).
    fail_once_at: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyOutcome:
    status: TerminalStudyStatus
    error: str | None = None
    bounds: Bounds | None = None


def ensure_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Connect to `address`, or start a local Ray when this process has none.

    `address="local"` is explicit on purpose: a bare `ray.init()` silently joins whatever
    cluster `RAY_ADDRESS` or a running local head points to.
    """
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )


def run_study(
    spec: StudySpec,
    sink: ResultSink,
    options: RunOptions,
    *,
    cancel: threading.Event | None = None,
) -> StudyOutcome:
    """Run `spec` to the end (or until `cancel` is set); every result goes to `sink`."""
    cancel = cancel or threading.Event()
    ensure_ray(options.ray_address)
    # Ray would keep a trial no node can hold pending forever.
    unplaceable = placement_problem(spec.resources_per_trial.cpu, spec.resources_per_trial.gpu)
    if unplaceable:
        raise StudyFailed(unplaceable)
    data = load_dataset(
        spec.dataset.name, spec.dataset.options, seed=0, data_root=options.data_root
    )
    # Files decide the shape of `npz` and `imagefolder` data: their model is checked here,
    # before any training, with the message a submission gets for the others.
    too_large = spec.model_size_problem(data.input_shape, data.num_classes, options.limits)
    if too_large:
        raise StudyFailed(too_large)
    per_epoch = data.iterations_per_epoch(spec.batch_size)
    budget = spec.check_budget(per_epoch, options.limits)
    planned = planned_trials(spec, budget)
    budgets = arm_budgets(spec, budget)
    prefix = options.tuning_study_prefix or options.experiment
    tuning = {
        arm.name: TuningPlan.of(arm, f"{prefix}/{arm.name}", budgets[arm.name])
        for arm in spec.arms
        if arm.tuning is not None
    }
    sink.emit(
        StudyPlanned(
            per_epoch,
            tuple(planned.values()),
            tuple(PlannedTuning(a, t.trials, t.max_iterations) for a, t in tuning.items()),
        )
    )
    forward = EventForwarder(sink, planned)
    started = time.monotonic()

    bounds = None
    if spec.range_test is not None:
        bounds = _range_test(spec, data, per_epoch, options, forward, cancel, sink)
        if cancel.is_set():
            return StudyOutcome("cancelled")
        if bounds is None:
            raise StudyFailed(f"the range test trial failed: {forward.range_error}")

    chosen: dict[str, dict[str, Any]] = {}
    if tuning:
        with open_storage(options.tuning_storage) as storage:
            for arm in spec.arms:
                if arm.name not in tuning:
                    continue
                best = _tune(
                    spec,
                    arm,
                    tuning[arm.name],
                    data,
                    per_epoch,
                    bounds,
                    storage,
                    options,
                    sink,
                    cancel,
                )
                if best is None:
                    return StudyOutcome("cancelled", bounds=bounds)
                chosen[arm.name] = best

    arms = resolve_arms(spec, per_epoch, budget, bounds, chosen)
    sink.emit(ArmsResolved(arms))
    trials = []
    for trial in planned.values():
        config = arm_trial_config(spec, trial, arms[trial.arm], options.checkpoint_every_s)
        if (fail_at := _fail_once_at(options, trial.trial_id)) is not None:
            config["fail_once_at"] = fail_at
        trials.append(config)
    _fit(
        flatten(arm_trainable),
        trials,
        data=data,
        spec=spec,
        options=options,
        name=f"{options.experiment}-trials",
        forward=forward,
        cancel=cancel,
    )
    # Trials the stopper ended (or never started) were cancelled.
    forward.cancel_unended(planned, wall_s=time.monotonic() - started)
    if cancel.is_set():
        return StudyOutcome("cancelled", bounds=bounds)
    return StudyOutcome("succeeded", bounds=bounds)


def _tune(
    spec: StudySpec,
    arm: ArmSpec,
    plan: TuningPlan,
    data: Dataset,
    per_epoch: int,
    bounds: Bounds | None,
    storage: Any,
    options: RunOptions,
    sink: ResultSink,
    cancel: threading.Event,
) -> dict[str, Any] | None:
    """Search a tuned arm's params on a validation split; the best values (None: cancelled)."""
    resolved = resolve_arm(arm, per_epoch, plan.max_iterations, bounds, None)
    base_config = tuning_trial_config(spec, arm.name, plan.seed, plan.max_iterations, resolved)
    base_config["fail_once_at"] = _fail_once_at(options, base_config["trial_id"])
    resources = spec.resources_per_trial
    watch = PlacementWatch(resources.cpu, resources.gpu, options.placement_grace_s)
    try:
        best = run_search(
            plan,
            tuning_trainable,
            base_config,
            data=data.validation_split(plan.validation_fraction, seed=plan.seed),
            storage=storage,
            sink=sink,
            cancel=cancel,
            stop=CancelStopper(cancel, watch),
            resources={"cpu": resources.cpu, "gpu": resources.gpu},
            storage_path=options.storage_path,
            experiment=options.experiment,
            max_concurrent_trials=options.max_concurrent_trials,
            callbacks=[watch],
        )
    except TuningFailed as error:
        raise StudyFailed(watch.problem or str(error)) from error
    if watch.problem is not None:
        raise StudyFailed(watch.problem)
    return best


def _range_test(
    spec: StudySpec,
    data: Dataset,
    per_epoch: int,
    options: RunOptions,
    forward: EventForwarder,
    cancel: threading.Event,
    sink: ResultSink,
) -> Bounds | None:
    _fit(
        flatten(range_test_trainable),
        [range_test_config(spec, per_epoch, options.limits)],
        data=data,
        spec=spec,
        options=options,
        name=f"{options.experiment}-range-test",
        forward=forward,
        cancel=cancel,
    )
    if forward.range_result is None:
        return None
    result = RangeTestResult.from_dict(forward.range_result)
    sink.emit(RangeTestEnded(result.stopped_at, result.stop_reason, forward.range_node))
    try:
        bounds = suggest_bounds(result)
    except UnusableRangeTest as error:
        raise StudyFailed(f"the range test gave no usable bounds: {error}") from error
    sink.emit(BoundsFound(bounds.base_lr, bounds.max_lr, bounds.method, bounds.reason))
    return bounds


def _fit(
    trainable: Callable[..., None],
    trials: list[dict[str, Any]],
    *,
    data: Dataset,
    spec: StudySpec,
    options: RunOptions,
    name: str,
    forward: EventForwarder,
    cancel: threading.Event,
) -> None:
    resources = spec.resources_per_trial
    watch = PlacementWatch(resources.cpu, resources.gpu, options.placement_grace_s)
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(trainable, data=data),
            {"cpu": resources.cpu, "gpu": resources.gpu},
        ),
        param_space={"trial": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(
            reuse_actors=True,
            max_concurrent_trials=options.max_concurrent_trials,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(Path(options.storage_path).resolve()),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[ForwardingCallback(forward), JsonLoggerCallback(), watch],
            stop=CancelStopper(cancel, watch),
            verbose=0,
        ),
    )
    tuner.fit()
    if watch.problem is not None:
        raise StudyFailed(watch.problem)


def _trial_name(trial: Any) -> str:
    return str(trial.config["trial"]["trial_id"])


def _fail_once_at(options: RunOptions, trial: str) -> dict[str, Any] | None:
    """The `fail_once_at` hook's config for `trial`, when the options name it."""
    if trial not in options.fail_once_at:
        return None
    marker = Path(options.storage_path) / f"{options.experiment}-{trial}.failed"
    return {"iteration": options.fail_once_at[trial], "marker": str(marker.resolve())}
