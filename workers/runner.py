"""Runs a whole study on Ray Tune: the range test trial, then every arm with every seed.

Results leave through the caller's `ResultSink`, as they happen: a Tune callback in the
driver turns each trial's reports into sink events. Trials report plain dicts; arm trials
checkpoint plain dicts every few evaluations, so a trial whose process dies resumes from
its last checkpoint and reports the same curve (points already sent are not sent again).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from clr.bounds import Bounds, UnusableRangeTest, suggest_bounds
from clr.policies import check_policy_params, get_policy
from clr.range_test import RangeTestResult
from workers.datasets import Dataset, load_dataset
from workers.events import (
    RANGE_TEST_TRIAL_ID,
    ArmsResolved,
    BoundsFound,
    EvalPoint,
    EvaluationPoints,
    PlannedTrial,
    PlannedTuning,
    RangeTestEnded,
    RangeTestPoint,
    RangeTestPoints,
    ResultSink,
    StudyPlanned,
    TrialEnded,
    TrialStarted,
)
from workers.spec import AUTO, TUNED, ArmSpec, Limits, StudySpec
from workers.trials import (
    ArmPlan,
    RangeTestPlan,
    TrialSetup,
    arm_lr_schedule,
    build_engine,
    run_arm,
    run_range_test,
)
from workers.tuning import (
    METRIC,
    TuningFailed,
    TuningPlan,
    open_storage,
    run_search,
    trial_error,
)

CHECKPOINT_EVERY = 4  # evaluations between checkpoints of an arm trial, at the most
CHECKPOINT_FILE = "trial.pt"
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
    # Test hook: trial_id -> iteration at which that trial's process exits once, abruptly
    # (f"{arm}-tuning" names a tuned arm's search: its first trial past it dies).
    fail_once_at: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyOutcome:
    status: str  # "succeeded" | "cancelled" | "failed"
    error: str | None = None
    bounds: Bounds | None = None


# --------------------------------------------------------------------------------------
# Ray
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


def _node_id() -> str | None:
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


# --------------------------------------------------------------------------------------
# trainables (run in Ray worker processes)
def _trial_threads(cpus: float) -> None:
    # torch threads = the cores the trial holds, so trials never oversubscribe the machine.
    torch.set_num_threads(max(1, int(cpus)))


def _setup(config: Mapping[str, Any]) -> TrialSetup:
    return TrialSetup(**config["setup"])


def range_test_trainable(config: dict[str, Any], data: Dataset) -> None:
    _trial_threads(config["cpus"])
    plan = RangeTestPlan(**config["plan"])
    engine = build_engine(_setup(config), data, plan.min_lr)
    node = _node_id()
    for progress in run_range_test(engine, plan):
        metrics: dict[str, Any] = {
            "clr_trial": RANGE_TEST_TRIAL_ID,
            "node_id": node,
            "range_points": [asdict(p) for p in progress.points],
        }
        if progress.result is not None:
            metrics["range_result"] = progress.result.to_dict()
        tune.report(metrics)


def arm_trainable(config: dict[str, Any], data: Dataset) -> None:
    _trial_threads(config["cpus"])
    setup = _setup(config)
    plan = ArmPlan(**config["plan"])
    engine = build_engine(setup, data, arm_lr_schedule(plan)(0))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            engine.load_state_dict(torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=False))
    fail_at = config.get("fail_once_at")
    node = _node_id()
    last_checkpoint = time.monotonic()
    for evaluations, progress in enumerate(run_arm(engine, plan), start=1):
        metrics: dict[str, Any] = {
            "clr_trial": setup.trial_id,
            "node_id": node,
            "points": [] if progress.point is None else [asdict(progress.point)],
            "state": progress.state,
            "iterations_done": progress.iteration,
            "wall_s": engine.elapsed_s,
        }
        due = time.monotonic() - last_checkpoint >= config["checkpoint_every_s"]
        if progress.state is None and evaluations % CHECKPOINT_EVERY == 0 and due:
            last_checkpoint = time.monotonic()
            with tempfile.TemporaryDirectory() as folder:
                torch.save(engine.state_dict(), Path(folder) / CHECKPOINT_FILE)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)
        _maybe_crash(fail_at, engine.iteration)


def _maybe_crash(fail_at: Mapping[str, Any] | None, iteration: int) -> None:
    """The `fail_once_at` test hook: the first trial past its iteration dies, once."""
    if fail_at is not None and iteration >= fail_at["iteration"]:
        marker = Path(fail_at["marker"])
        if not marker.exists():
            marker.touch()
            os._exit(1)  # the abrupt death of a worker process, as a crash would be


def _fail_once_at(options: RunOptions, trial: str) -> dict[str, Any] | None:
    """The `fail_once_at` hook's config for `trial`, when the options name it."""
    if trial not in options.fail_once_at:
        return None
    marker = Path(options.storage_path) / f"{options.experiment}-{trial}.failed"
    return {"iteration": options.fail_once_at[trial], "marker": str(marker.resolve())}


def tuning_trainable(config: dict[str, Any], data: Dataset) -> None:
    """One tuning trial: the arm with the searched values (at the top of `config`), scored
    by validation accuracy at every evaluation. No checkpoints: a failed one is not retried."""
    trial = config["trial"]
    _trial_threads(trial["cpus"])
    setup = _setup(trial)
    given = dict(trial["plan"])
    policy = given["policy"]
    # The searched values come typed from their Optuna distributions; the check converts.
    chosen = {k: config[k] for k in trial["tuned"]}
    params = check_policy_params(policy["name"], {**policy["params"], **chosen})
    plan = ArmPlan(**{**given, "policy": {"name": policy["name"], "params": params}})
    engine = build_engine(setup, data, arm_lr_schedule(plan)(0))
    node = _node_id()
    for progress in run_arm(engine, plan):
        tune.report(
            {
                # A diverged trial scores 0: the search must learn to avoid where it went.
                METRIC: 0.0 if progress.point is None else progress.point.accuracy,
                "iterations_done": progress.iteration,
                "state": progress.state,
                "wall_s": engine.elapsed_s,
                "node_id": node,
            }
        )
        _maybe_crash(trial.get("fail_once_at"), engine.iteration)


# --------------------------------------------------------------------------------------
# driver side: reports -> sink events
class _SinkCallback:
    """Turns trial reports into sink events; built lazily as a `tune.Callback` subclass."""

    def __init__(self, sink: ResultSink, planned: Mapping[str, PlannedTrial]) -> None:
        self.sink = sink
        self.planned = planned
        self.last_iteration: dict[str, int] = {}
        self.node: dict[str, str | None] = {}
        self.ended: set[str] = set()
        self.range_result: dict[str, Any] | None = None
        self.range_node: str | None = None
        self.range_error: str | None = None

    def result(self, result: Mapping[str, Any]) -> None:
        trial_id = result.get("clr_trial")
        if trial_id == RANGE_TEST_TRIAL_ID:
            self._range_result(result)
        elif isinstance(trial_id, str) and trial_id in self.planned:
            self._arm_result(trial_id, result)

    def _range_result(self, result: Mapping[str, Any]) -> None:
        last = self.last_iteration.get(RANGE_TEST_TRIAL_ID, -1)
        points = [RangeTestPoint(**p) for p in result["range_points"] if p["iteration"] > last]
        if points:
            self.last_iteration[RANGE_TEST_TRIAL_ID] = points[-1].iteration
            self.sink.emit(RangeTestPoints(tuple(points)))
        self.range_node = result.get("node_id")
        if "range_result" in result:
            self.range_result = result["range_result"]

    def _arm_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        planned = self.planned[trial_id]
        node = result.get("node_id")
        if trial_id not in self.node or self.node[trial_id] != node:
            self.node[trial_id] = node
            self.sink.emit(
                TrialStarted(trial_id, planned.arm, planned.seed, planned.iterations, node)
            )
        last = self.last_iteration.get(trial_id, -1)
        points = [EvalPoint(**p) for p in result["points"] if p["iteration"] > last]
        if points:
            self.last_iteration[trial_id] = points[-1].iteration
            self.sink.emit(EvaluationPoints(trial_id, tuple(points)))
        state = result.get("state")
        if state and trial_id not in self.ended:
            self.ended.add(trial_id)
            self.sink.emit(
                TrialEnded(
                    trial_id,
                    state,
                    iterations_done=result["iterations_done"],
                    wall_s=result["wall_s"],
                    node_id=node,
                )
            )

    def error(self, trial_id: str | None, message: str) -> None:
        if trial_id is None or trial_id in self.ended:
            return
        self.ended.add(trial_id)
        if trial_id == RANGE_TEST_TRIAL_ID:
            self.range_error = message
            return
        self.sink.emit(
            TrialEnded(
                trial_id,
                "failed",
                iterations_done=max(0, self.last_iteration.get(trial_id, 0)),
                wall_s=0.0,
                error=message,
                node_id=self.node.get(trial_id),
            )
        )


class _TuneCallback(tune.Callback):
    """Hands Tune's trial events to the forwarder.

    Tune pickles its callbacks and stopper into the experiment's state file for
    `Tuner.restore`, which clrstudy does not use (a study's driver always starts a new
    Tuner); their live parts (the sink, the cancel event) stay out of that file.
    """

    def __init__(self, forward: _SinkCallback) -> None:
        self.forward = forward

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def on_trial_result(
        self, iteration: int, trials: Any, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.forward.result(result)

    def on_trial_error(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        self.forward.error(trial.config.get("trial", {}).get("trial_id"), trial_error(trial))


class _CancelStopper(tune.Stopper):
    """Stops every trial once the study is cancelled."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.cancel.is_set()

    def stop_all(self) -> bool:
        return self.cancel.is_set()


def _fit(
    trainable: Callable[..., None],
    trials: list[dict[str, Any]],
    *,
    data: Dataset,
    spec: StudySpec,
    options: RunOptions,
    name: str,
    forward: _SinkCallback,
    cancel: threading.Event,
) -> None:
    resources = spec.resources_per_trial
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
            callbacks=[_TuneCallback(forward), JsonLoggerCallback()],
            stop=_CancelStopper(cancel),
            verbose=0,
        ),
    )
    tuner.fit()


def _trial_name(trial: Any) -> str:
    return str(trial.config["trial"]["trial_id"])


def _flatten(trainable: Callable[[dict[str, Any], Dataset], None]) -> Callable[..., None]:
    """Tune passes {"trial": {...}}; trainables read the inner dict."""

    def run(config: dict[str, Any], data: Dataset) -> None:
        trainable(config["trial"], data)

    run.__name__ = trainable.__name__
    return run


# --------------------------------------------------------------------------------------
# planning
def _resolve_arms(
    spec: StudySpec,
    iterations_per_epoch: int,
    budget: int,
    bounds: Bounds | None,
    chosen: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Arms as they will train: "auto" from the bounds, "tuned" from `chosen` (per arm),
    epochs in iterations."""
    return {
        arm.name: _resolve_arm(
            arm, iterations_per_epoch, arm.iterations or budget, bounds, chosen.get(arm.name)
        )
        for arm in spec.arms
    }


def _resolve_arm(
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


def trial_id(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def _setup_dict(
    spec: StudySpec, trial: str, seed: int, optimizer: Mapping[str, Any]
) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------
# the study
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
    data = load_dataset(
        spec.dataset.name, spec.dataset.options, seed=0, data_root=options.data_root
    )
    per_epoch = data.iterations_per_epoch(spec.batch_size)
    budget = spec.check_budget(per_epoch, options.limits)
    arms_budget = {arm.name: arm.iterations or budget for arm in spec.arms}
    planned = {
        trial_id(arm.name, seed): PlannedTrial(
            trial_id(arm.name, seed), arm.name, seed, arms_budget[arm.name]
        )
        for arm in spec.arms
        for seed in spec.seeds
    }
    prefix = options.tuning_study_prefix or options.experiment
    tuning = {
        arm.name: TuningPlan.of(arm, f"{prefix}/{arm.name}", arms_budget[arm.name])
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
    forward = _SinkCallback(sink, planned)
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

    arms = _resolve_arms(spec, per_epoch, budget, bounds, chosen)
    sink.emit(ArmsResolved(arms))
    trials = []
    for trial in planned.values():
        resolved = arms[trial.arm]
        config: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "cpus": spec.resources_per_trial.cpu,
            "checkpoint_every_s": options.checkpoint_every_s,
            "setup": _setup_dict(spec, trial.trial_id, trial.seed, resolved["optimizer"]),
            "plan": asdict(
                ArmPlan(
                    policy=resolved["policy"],
                    iterations=resolved["iterations"],
                    eval_every=spec.eval_every,
                    cycle_momentum=resolved["cycle_momentum"],
                )
            ),
        }
        if (fail_at := _fail_once_at(options, trial.trial_id)) is not None:
            config["fail_once_at"] = fail_at
        trials.append(config)
    _fit(
        _flatten(arm_trainable),
        trials,
        data=data,
        spec=spec,
        options=options,
        name=f"{options.experiment}-trials",
        forward=forward,
        cancel=cancel,
    )
    # Trials the stopper ended (or never started) were cancelled.
    for trial in planned.values():
        if trial.trial_id not in forward.ended:
            forward.ended.add(trial.trial_id)
            sink.emit(
                TrialEnded(
                    trial.trial_id,
                    "cancelled",
                    iterations_done=max(0, forward.last_iteration.get(trial.trial_id, 0)),
                    wall_s=time.monotonic() - started,
                    node_id=forward.node.get(trial.trial_id),
                )
            )
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
    resolved = _resolve_arm(arm, per_epoch, plan.max_iterations, bounds, None)
    trial = f"{arm.name}-tuning"
    base_config = {
        "trial_id": trial,
        "cpus": spec.resources_per_trial.cpu,
        "tuned": resolved["tuned"],
        "setup": _setup_dict(spec, trial, plan.seed, resolved["optimizer"]),
        "plan": asdict(
            ArmPlan(
                policy=resolved["policy"],
                iterations=plan.max_iterations,
                eval_every=spec.eval_every,
                cycle_momentum=resolved["cycle_momentum"],
            )
        ),
        "fail_once_at": _fail_once_at(options, trial),
    }
    resources = spec.resources_per_trial
    try:
        return run_search(
            plan,
            tuning_trainable,
            base_config,
            data=data.validation_split(plan.validation_fraction, seed=plan.seed),
            storage=storage,
            sink=sink,
            cancel=cancel,
            stop=_CancelStopper(cancel),
            resources={"cpu": resources.cpu, "gpu": resources.gpu},
            storage_path=options.storage_path,
            experiment=options.experiment,
            max_concurrent_trials=options.max_concurrent_trials,
        )
    except TuningFailed as error:
        raise StudyFailed(str(error)) from error


def _range_test(
    spec: StudySpec,
    data: Dataset,
    per_epoch: int,
    options: RunOptions,
    forward: _SinkCallback,
    cancel: threading.Event,
    sink: ResultSink,
) -> Bounds | None:
    test = spec.range_test
    assert test is not None
    iterations = test.check_budget(per_epoch, options.limits)
    eval_every = test.eval_every or max(1, iterations // 30)
    config = {
        "trial_id": RANGE_TEST_TRIAL_ID,
        "cpus": spec.resources_per_trial.cpu,
        "setup": _setup_dict(spec, RANGE_TEST_TRIAL_ID, 0, test.optimizer.model_dump()),
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
    _fit(
        _flatten(range_test_trainable),
        [config],
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
