"""Tuned arms: an Optuna search over some policy parameters, run by Ray Tune with ASHA.

A tuned arm's search runs before the final trials. Optuna's TPE sampler (seeded) proposes
values through Ray Tune's `OptunaSearch`; every tuning trial trains up to `max_iterations`
on a validation split of the training set (the test set never chooses) and reports its
validation accuracy at each evaluation; ASHA stops the unpromising ones at its rungs. The
best trial that ran to `max_iterations` gives the values every seed of the arm then trains
with.

The Optuna study lives in an Optuna storage (the service's database, or a SQLite file next
to `clrstudy run`'s results), so `optuna-dashboard` shows it. Two things Ray's
`OptunaSearch` does not say right are put right here:

- trials that ASHA stops are told to Optuna as COMPLETE (with their last value), and failed
  trials that had reported as COMPLETE too. We tell failed and cancelled ones as FAIL, and
  every trial carries user attributes `clrstudy_state` ("completed", "stopped", ...) and
  `clrstudy_iterations` (what it trained), set before it is told;
- a study whose driver died leaves its running Optuna trial RUNNING forever, and
  `Tuner.restore` then fails (UpdateFinishedTrialError). A new run of the same study marks
  such trials FAIL ("interrupted": they lack `clrstudy_state`) and starts a new Tuner on the
  same Optuna study for the trials still to run; finished ones keep counting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from sqlalchemy.engine import make_url

from clr.policies import get_policy
from workers.datasets import Dataset
from workers.events import ResultSink, TuningEnded, TuningStarted, TuningTrialEnded
from workers.results import finite
from workers.spec import ArmSpec, TuningSpec, search_log
from workers.states import COUNTED_TUNING_TRIAL_STATES, FINISHED_TRIAL_STATES

METRIC = "accuracy"  # validation accuracy at a tuning trial's latest evaluation
STATE_ATTR = "clrstudy_state"
ITERATIONS_ATTR = "clrstudy_iterations"


class TuningFailed(RuntimeError):
    """A tuned arm's search gave no configuration to train with."""


@dataclass(frozen=True)
class TuningPlan:
    """A tuned arm's search as it will run."""

    arm: str
    study_name: str
    trials: int
    max_iterations: int
    grace_period: int
    reduction_factor: int
    seed: int
    validation_fraction: float
    space: dict[str, dict[str, Any]]  # name -> {"type", "low", "high", "log"}
    start_with: tuple[dict[str, float], ...] = ()

    @classmethod
    def of(cls, arm: ArmSpec, study_name: str, arm_budget: int) -> TuningPlan:
        tuning: TuningSpec | None = arm.tuning
        assert tuning is not None
        max_iterations = tuning.max_iterations or arm_budget
        grace = tuning.grace_period or max(1, max_iterations // tuning.reduction_factor**2)
        declared = {p.name: p for p in get_policy(arm.policy.name).params}
        space = {
            name: {
                "type": declared[name].type,
                "low": int(bounds.low) if declared[name].type == "int" else bounds.low,
                "high": int(bounds.high) if declared[name].type == "int" else bounds.high,
                "log": search_log(declared[name], bounds),
            }
            for name, bounds in tuning.space.items()
        }
        return cls(
            arm=arm.name,
            study_name=study_name,
            trials=tuning.trials,
            max_iterations=max_iterations,
            grace_period=min(grace, max_iterations),
            reduction_factor=tuning.reduction_factor,
            seed=tuning.seed,
            validation_fraction=tuning.validation_fraction,
            space=space,
            start_with=tuple(dict(point) for point in tuning.start_with),
        )

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions of the space (picklable, unlike a define-by-run function)."""
        out: dict[str, BaseDistribution] = {}
        for name, r in self.space.items():
            if r["type"] == "int":
                out[name] = IntDistribution(int(r["low"]), int(r["high"]), log=r["log"])
            else:
                out[name] = FloatDistribution(float(r["low"]), float(r["high"]), log=r["log"])
        return out

    def sampler(self) -> optuna.samplers.BaseSampler:
        # TPE's default of 10 random start-up trials would leave a search of 12 trials
        # random; a third of the trials (3 at the least, 10 at the most) start it here.
        startup = min(10, max(3, self.trials // 3))
        return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=startup)


@contextmanager
def open_storage(url: str | None) -> Iterator[optuna.storages.BaseStorage]:
    """Optuna's storage at `url` (an SQLAlchemy URL), or an in-memory one for None; its
    connections are closed on leaving.

    Ray's OptunaSearch pickles the storage into its `searcher-state-*.pkl` files under the
    shared STORAGE_PATH: its `url` there is the one without the password. Only the engine,
    never pickled, holds the password (a storage unpickled elsewhere could not connect;
    clrstudy never unpickles one: a search resumes from the database).
    """
    if url is None:
        yield optuna.storages.InMemoryStorage()
        return
    parsed = make_url(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.drivername.startswith("sqlite"):
        # The driver's own sink writes to the same SQLite file: wait for its lock.
        engine_kwargs = {"connect_args": {"timeout": 30}}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    # URL.set(password=None) leaves the password as it is: None there means "no change".
    storage.url = parsed._replace(password=None).render_as_string(hide_password=False)
    try:
        yield storage
    finally:
        storage.engine.dispose()


def classify(result: Mapping[str, Any] | None, error: bool, cancelled: bool) -> str:
    """What really happened to a tuning trial, from its last result."""
    state = (result or {}).get("state")
    if state in FINISHED_TRIAL_STATES:
        return str(state)
    if error:
        return "failed"
    if cancelled:
        return "cancelled"
    return "stopped"  # Tune stopped it before the end, and nobody cancelled: ASHA did


class RecordingOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, telling Optuna what really happened to each trial.

    Steps of Optuna's intermediate values are training iterations (Ray's are report
    counts), so optuna-dashboard plots them against what the trials cost.
    """

    _LIVE = ("_cancel",)  # left out of Tune's experiment checkpoint (not picklable)

    def __init__(self, *args: Any, cancel: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cancel = cancel
        self.numbers: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self.last_step: dict[str, int] = {}  # Tune trial id -> last step told to Optuna
        # Tune trial id -> (state, iterations trained), as told to Optuna; Tune calls the
        # searcher before the callbacks, which report the same.
        self.outcomes: dict[str, tuple[str, int]] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        self.numbers[trial_id] = self._ot_trials[trial_id].number
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self._completed_trials:
            return
        step = int(result["iterations_done"])
        self._ot_trials[trial_id].report(result[METRIC], step)
        self.last_step[trial_id] = step

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        state = classify(result, error, self._cancel.is_set())
        ot_trial = self._ot_trials[trial_id]
        if result and METRIC in result and "iterations_done" in result:
            # The result Tune stopped the trial at never reached on_trial_result.
            step = int(result["iterations_done"])
            if self.last_step.get(trial_id) != step:
                ot_trial.report(result[METRIC], step)
        ot_trial.set_user_attr(STATE_ATTR, state)
        # A failed trial comes without its result: its last report says what it trained.
        iterations = int((result or {}).get("iterations_done", self.last_step.get(trial_id, 0)))
        ot_trial.set_user_attr(ITERATIONS_ATTR, iterations)
        self.outcomes[trial_id] = (state, iterations)
        if state == "failed" or state == "cancelled":
            # Ray would tell a trial that failed after reporting as COMPLETE.
            super().on_trial_complete(trial_id, result=None, error=True)
        else:
            super().on_trial_complete(trial_id, result=result, error=False)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its config (the searcher in it) for Tuner.restore, never used here.
        return {k: v for k, v in self.__dict__.items() if k not in self._LIVE}

    def save(self, checkpoint_path: str) -> None:
        live = {name: self.__dict__.pop(name) for name in self._LIVE}
        try:
            super().save(checkpoint_path)
        finally:
            self.__dict__.update(live)


class _TuningCallback(tune.Callback):
    """Turns the ends of tuning trials into `TuningTrialEnded` events (driver side)."""

    def __init__(
        self,
        plan: TuningPlan,
        searcher: RecordingOptunaSearch,
        emit: Callable[[TuningTrialEnded], None],
    ) -> None:
        self.plan = plan
        self.searcher = searcher
        self.emit = emit
        self.ended: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles its callbacks for Tuner.restore, which clrstudy never uses

    def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        self._ended(trial, error=None)

    def on_trial_error(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        self._ended(trial, error=trial_error(trial))

    def _ended(self, trial: Any, error: str | None) -> None:
        outcome = self.searcher.outcomes.get(trial.trial_id)
        if trial.trial_id in self.ended or outcome is None:
            return
        self.ended.add(trial.trial_id)
        state, iterations = outcome
        result = trial.last_result or {}
        value = result.get(METRIC) if "iterations_done" in result else None
        self.emit(
            TuningTrialEnded(
                arm=self.plan.arm,
                number=self.searcher.numbers[trial.trial_id],
                params={k: trial.config[k] for k in self.plan.space},
                state=state,  # type: ignore[arg-type]
                iterations_done=iterations,
                value=finite(value),
                wall_s=float(result.get("wall_s", 0.0)),
                error=error,
                node_id=result.get("node_id"),
            )
        )


def trial_error(trial: Any) -> str:
    """Why a Tune trial failed, in at most 4,000 characters.

    Tune writes the error to the trial's local folder first and copies it to the storage
    later, so the local file is read when the storage's copy is not there yet.
    """
    error = trial.get_error()
    if not error and trial.error_file and Path(trial.error_file).exists():
        error = Path(trial.error_file).read_text(errors="replace").strip()
    return str(error)[-4000:] if error else "the trial failed (Tune kept no error text)"


def _record_of(arm: str, trial: optuna.trial.FrozenTrial) -> TuningTrialEnded:
    """A finished Optuna trial of an earlier run, as the event that run sent (or would have).

    A trial without our state attribute was running when that run died: interrupted.
    """
    state = trial.user_attrs.get(STATE_ATTR, "interrupted")
    steps = trial.intermediate_values
    iterations = trial.user_attrs.get(ITERATIONS_ATTR, max(steps) if steps else 0)
    last = steps[max(steps)] if steps else None
    value = trial.value if trial.state == TrialState.COMPLETE else last
    wall_s = 0.0
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        wall_s = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return TuningTrialEnded(
        arm=arm,
        number=trial.number,
        params=dict(trial.params),
        state=state,
        iterations_done=int(iterations),
        value=finite(value),
        wall_s=wall_s,
        error="its run of the study ended while it trained" if state == "interrupted" else None,
    )


def recover(study: optuna.Study, plan: TuningPlan) -> tuple[list[TuningTrialEnded], int]:
    """Mark trials an earlier, dead run left RUNNING as FAIL; return every finished trial's
    record and how many of them count towards `plan.trials`."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    finished = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    records = [_record_of(plan.arm, t) for t in sorted(finished, key=lambda t: t.number)]
    return records, sum(r.state in COUNTED_TUNING_TRIAL_STATES for r in records)


def close_interrupted(url: str, prefix: str, arms: list[str]) -> list[TuningTrialEnded]:
    """Tell FAIL every trial still RUNNING in the searches `f"{prefix}/{arm}"`, whose driver
    is known to be gone; return them as records (state "interrupted").

    For a study that will not run again (the service fails a study whose driver died):
    its Optuna record then says what happened instead of showing a trial running forever.
    """
    closed = []
    with open_storage(url) as storage:
        for arm in arms:
            try:
                study = optuna.load_study(study_name=f"{prefix}/{arm}", storage=storage)
            except KeyError:
                continue  # its search never started
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            for trial in running:
                study.tell(trial.number, state=TrialState.FAIL)
            numbers = {t.number for t in running}
            closed += [_record_of(arm, t) for t in study.get_trials() if t.number in numbers]
    return closed


def best_of(records: list[TuningTrialEnded], plan: TuningPlan) -> TuningTrialEnded:
    """The trial with the highest value among those that ran to max_iterations."""
    full = [r for r in records if r.state == "completed" and r.value is not None]
    if not full:
        counts = {s: sum(r.state == s for r in records) for s in COUNTED_TUNING_TRIAL_STATES}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none ran"
        raise TuningFailed(
            f"the search of arm {plan.arm!r} has no trial that ran to its "
            f"{plan.max_iterations} iterations ({summary}); widen tuning.space or raise "
            "tuning.trials"
        )
    return max(full, key=lambda r: (r.value, -r.number))


def run_search(
    plan: TuningPlan,
    trainable: Any,
    base_config: dict[str, Any],
    *,
    data: Dataset,
    storage: optuna.storages.BaseStorage,
    sink: ResultSink,
    cancel: threading.Event,
    stop: tune.Stopper,
    resources: dict[str, float],
    storage_path: str,
    experiment: str,
    max_concurrent_trials: int | None,
    callbacks: Sequence[tune.Callback] = (),
) -> dict[str, Any] | None:
    """Run (or finish) a tuned arm's search; the best params, or None when cancelled.

    `trainable(config, data)` trains `config["trial"]` with the searched values, which Tune
    puts at the top level of `config`.
    """
    # Optuna logs every trial at INFO; our progress display and events say it already.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=plan.study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
    )
    previous, counted = recover(study, plan)
    sink.emit(
        TuningStarted(
            plan.arm, plan.study_name, plan.trials, plan.max_iterations, plan.space, counted
        )
    )
    for record in previous:
        sink.emit(record)
    records = list(previous)
    remaining = plan.trials - counted
    if remaining > 0:
        # Points to try first go in once: an earlier run already enqueued them.
        start = [dict(p) for p in plan.start_with] if not study.trials else None
        searcher = RecordingOptunaSearch(
            space=plan.distributions(),
            metric=METRIC,
            mode="max",
            sampler=plan.sampler(),
            study_name=plan.study_name,
            storage=storage,
            points_to_evaluate=start,
            cancel=cancel,
        )
        callback = _TuningCallback(plan, searcher, _collect(records, sink))
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, data=data), resources),
            param_space={"trial": base_config},
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=ASHAScheduler(
                    time_attr="iterations_done",
                    metric=METRIC,
                    mode="max",
                    max_t=plan.max_iterations,
                    grace_period=plan.grace_period,
                    reduction_factor=plan.reduction_factor,
                ),
                num_samples=remaining,
                max_concurrent_trials=max_concurrent_trials,
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=f"{experiment}-tuning-{plan.arm}",
                storage_path=str(Path(storage_path).resolve()),
                # A failed tuning trial is recorded as such and counts; it is not retried.
                failure_config=tune.FailureConfig(max_failures=0),
                callbacks=[callback, JsonLoggerCallback(), *callbacks],
                stop=stop,
                verbose=0,
            ),
        )
        tuner.fit()
    if cancel.is_set():
        return None
    best = best_of(records, plan)
    sink.emit(TuningEnded(plan.arm, best.number, dict(best.params), float(best.value or 0.0)))
    return dict(best.params)


def _collect(
    records: list[TuningTrialEnded], sink: ResultSink
) -> Callable[[TuningTrialEnded], None]:
    def emit(record: TuningTrialEnded) -> None:
        records.append(record)
        sink.emit(record)

    return emit


def _trial_name(trial: Any) -> str:
    return f"{trial.config['trial']['trial_id']}-{trial.trial_id}"
