"""Tuned arms: the spec's tuning section, the search's bookkeeping, and real searches.

The searches run on the session's local Ray with digits and a small MLP, their Optuna
studies in a real database (SQLite, and PostgreSQL where TEST_DATABASE_URL is set).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import optuna
import pytest
from optuna.trial import TrialState

from service.ray_cluster import free_port
from service.reports import build_report
from workers.datasets import load_dataset
from workers.events import (
    ArmsResolved,
    EvaluationPoints,
    Event,
    ResultSink,
    StudyPlanned,
    TrialEnded,
    TuningEnded,
    TuningStarted,
    TuningTrialEnded,
)
from workers.results import ResultsDocument
from workers.runner import RunOptions, run_study
from workers.spec import SpecError, StudySpec, parse_spec
from workers.tuning import (
    ITERATIONS_ATTR,
    STATE_ATTR,
    TuningFailed,
    TuningPlan,
    best_of,
    classify,
    open_storage,
    recover,
)


@contextmanager
def optuna_study(name: str, url: str) -> Iterator[optuna.Study]:
    """`optuna.load_study(study_name=name, storage=url)`, its connections closed after."""
    storage = optuna.storages.RDBStorage(url)  # what load_study opens for a URL
    try:
        yield optuna.load_study(study_name=name, storage=storage)
    finally:
        storage.engine.dispose()


def dashboard_studies(url: str) -> dict[str, dict]:
    """The studies `optuna-dashboard URL` shows, by name, with their trials."""
    port = free_port()
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).with_name("optuna-dashboard")), url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/studies"
        deadline = time.monotonic() + 60
        while True:
            try:
                listed = httpx.get(base, timeout=5).json()["study_summaries"]
                break
            except httpx.TransportError:
                if dashboard.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(dashboard.stderr.read().decode()) from None
                time.sleep(0.3)
        return {
            s["study_name"]: httpx.get(f"{base}/{s['study_id']}", timeout=5).json() for s in listed
        }
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
        dashboard.stderr.close()


class Collector:
    def __init__(self, also: ResultSink | None = None) -> None:
        self.events: list[Event] = []
        self.also = also

    def emit(self, event: Event) -> None:
        self.events.append(event)
        if self.also is not None:
            self.also.emit(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def body(arms: list[dict], **extra) -> dict:
    return {
        "name": "tuning test",
        "dataset": "digits",
        "model": {"name": "mlp", "hidden": "64"},
        "batch_size": 64,
        "iterations": 120,
        "eval_every": 10,
        "seeds": [0],
        "arms": arms,
        "resources_per_trial": {"cpu": 1},
        **extra,
    }


def tuned_arm(**tuning) -> dict:
    return {
        "name": "tuned",
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "policy": "fixed",
        "tuning": {"trials": 4, "space": {"lr": {"low": 1e-4, "high": 1.0}}, **tuning},
    }


# ---- the spec ----------------------------------------------------------------------------


def spec_error(arm: dict, **extra) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(body([arm], **extra))
    return str(caught.value)


def test_a_searched_parameter_reads_tuned_in_the_policy():
    spec = parse_spec(body([tuned_arm()]))
    assert spec.arms[0].policy.params == {"lr": "tuned"}
    # The stored form validates again to the same spec.
    assert StudySpec.model_validate(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ({"trials": 0}, "tuning.trials: must be a whole number of tuning trials between 1 and"),
        ({"trials": 2.5}, "got 2.5"),
        (
            {"space": {"lr": {"low": 0.1, "high": 0.1}}},
            "lr: empty search range: low (0.1) must be below high (0.1)",
        ),
        ({"space": {"lr": {"low": 0.5, "high": 0.1}}}, "empty search range"),
        ({"space": {}}, "give at least one parameter to search"),
        (
            {"space": {"lr": {"low": 0.0, "high": 1.0}}},
            "lr is searched on a log scale, which needs low > 0, got low=0.0",
        ),
        (
            {"space": {"lr": {"low": 0.01, "high": 1}, "gamma": {"low": 0.1, "high": 0.9}}},
            "tuning.space.gamma: fixed has no parameter 'gamma' to search; it may search: lr",
        ),
        ({"start_with": [{"lr": 5.0}]}, "tuning.start_with[0].lr = 5.0 is outside its range"),
        ({"start_with": [{}]}, "tuning.start_with[0] must give exactly lr, got nothing"),
        (
            {"grace_period": 50, "max_iterations": 50},
            "tuning.grace_period (50) must be below tuning.max_iterations (50)",
        ),
        ({"reduction_factor": 1}, "reduction_factor"),
        ({"validation_fraction": 0.9}, "validation_fraction"),
    ],
)
def test_bad_tuning_settings_are_refused_with_the_field_and_value(tuning, message):
    assert message in spec_error(tuned_arm(**tuning))


def test_a_value_given_and_searched_or_tuned_without_a_search_is_refused():
    arm = tuned_arm()
    arm["policy"] = {"name": "fixed", "lr": 0.1}
    assert "tuning.space.lr: policy.params also gives lr = 0.1" in spec_error(arm)
    plain = {"name": "a", "optimizer": "sgd", "policy": {"name": "fixed", "lr": "tuned"}}
    assert "policy.params.lr is 'tuned' but the arm has no tuning section" in spec_error(plain)


def test_range_ends_must_make_valid_schedules_and_whole_step_sizes():
    step = {
        "name": "step",
        "optimizer": "sgd",
        "policy": {"name": "step", "step_size": 50},
        "tuning": {
            "trials": 3,
            "space": {"lr": {"low": 0.01, "high": 1}, "gamma": {"low": 0.1, "high": 1.5}},
        },
    }
    assert "at the range's high end, gamma must be a finite number with 0 < gamma <= 1" in (
        spec_error(step)
    )
    step["tuning"]["space"] = {"step_size": {"low": 10.5, "high": 100}}
    step["policy"] = {"name": "step", "lr": 0.1}
    assert "step_size is a whole number of iterations" in spec_error(step)


def test_a_tuning_budget_above_the_limit_is_refused():
    message = spec_error(tuned_arm(max_iterations=10**7))
    assert "arms[0].tuning.max_iterations is 10000000, above the limit of" in message


def test_the_plan_defaults_log_scale_for_lrs_and_asha_rungs():
    spec = parse_spec(
        body(
            [
                {
                    "name": "step",
                    "optimizer": "sgd",
                    "policy": {"name": "step", "step_size": 50},
                    "tuning": {
                        "trials": 30,
                        "max_iterations": 900,
                        "space": {"lr": {"low": 0.01, "high": 1}, "gamma": {"low": 0.1, "high": 1}},
                    },
                }
            ]
        )
    )
    plan = TuningPlan.of(spec.arms[0], "p/step", arm_budget=120)
    assert plan.space["lr"]["log"] is True and plan.space["gamma"]["log"] is False
    assert plan.max_iterations == 900
    assert plan.grace_period == 100  # 900 / 3**2
    assert plan.sampler()._n_startup_trials == 10  # a third of 30
    default = TuningPlan.of(parse_spec(body([tuned_arm()])).arms[0], "p/tuned", 120)
    assert default.max_iterations == 120 and default.grace_period == 13


# ---- bookkeeping without Ray -------------------------------------------------------------


def test_classify_says_what_really_happened():
    assert classify({"state": "completed"}, error=False, cancelled=True) == "completed"
    assert classify({"state": "diverged"}, error=False, cancelled=False) == "diverged"
    assert classify({"state": None}, error=True, cancelled=False) == "failed"
    assert classify({"state": None}, error=False, cancelled=True) == "cancelled"
    assert classify({"state": None}, error=False, cancelled=False) == "stopped"
    assert classify(None, error=False, cancelled=False) == "stopped"


def record(number: int, state: str, value: float | None, iterations: int = 120):
    return TuningTrialEnded(
        "tuned", number, {"lr": 0.1 * (number + 1)}, state, iterations, value, 1.0
    )


def test_the_best_ran_to_the_end_and_ties_go_to_the_lower_number():
    plan = TuningPlan.of(parse_spec(body([tuned_arm()])).arms[0], "p/tuned", 120)
    records = [
        record(0, "stopped", 0.99, 40),  # higher, but stopped early: not comparable
        record(1, "completed", 0.90),
        record(2, "completed", 0.95),
        record(3, "completed", 0.95),
    ]
    assert best_of(records, plan).number == 2
    with pytest.raises(TuningFailed, match=r"no trial that ran to its 120 iterations \(1 stopped"):
        best_of(records[:1], plan)


def test_recovery_marks_a_trial_left_running_failed_and_keeps_the_finished(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with open_storage(storage) as opened:
        leave_a_trial_running(opened)

    plan = TuningPlan.of(parse_spec(body([tuned_arm()])).arms[0], "p/tuned", 120)
    with optuna_study("p/tuned", storage) as again:
        records, counted = recover(again, plan)
    assert counted == 1
    assert [(r.number, r.state, r.iterations_done) for r in records] == [
        (0, "completed", 120),
        (1, "interrupted", 60),
    ]
    with optuna_study("p/tuned", storage) as study:
        states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]


def leave_a_trial_running(storage: optuna.storages.BaseStorage) -> None:
    """One trial finished as the search tells it, and one a dead driver left RUNNING."""
    study = optuna.create_study(study_name="p/tuned", storage=storage, direction="maximize")
    done = study.ask()
    done.suggest_float("lr", 1e-4, 1.0, log=True)
    done.report(0.9, 120)
    done.set_user_attr(STATE_ATTR, "completed")
    done.set_user_attr(ITERATIONS_ATTR, 120)
    study.tell(done, 0.9)
    left = study.ask()  # a dead driver's trial: asked, reported to 60, never told
    left.suggest_float("lr", 1e-4, 1.0, log=True)
    left.report(0.5, 60)


def test_the_validation_split_is_stratified_seeded_and_disjoint():
    data = load_dataset("digits", {}, seed=0)
    split = data.validation_split(0.2, seed=3)
    assert split.train_size + split.test_size == data.train_size
    assert abs(split.test_size - 0.2 * data.train_size) <= 10
    assert split.validation_split(0.2, seed=3).test_size > 0
    rows = {tuple(x.flatten().tolist()) for x in split.x_test}
    assert not rows & {tuple(x.flatten().tolist()) for x in split.x_train}
    assert data.validation_split(0.2, seed=3).y_test.tolist() == split.y_test.tolist()
    assert data.validation_split(0.2, seed=4).y_test.tolist() != split.y_test.tolist() or (
        not data.validation_split(0.2, seed=4).x_test.equal(split.x_test)
    )
    counts = split.y_test.bincount().tolist()
    assert max(counts) - min(counts) <= 2  # every class keeps its share
    with pytest.raises(ValueError, match="between 0 and 1"):
        data.validation_split(1.0)


# ---- real searches -----------------------------------------------------------------------


def _tune_results(folder: Path) -> dict[str, int]:
    """Tune's own record (result.json) of the iterations each tuning trial reported last."""
    done = {}
    for result in folder.glob("*/result.json"):
        lines = result.read_text().splitlines()
        done[result.parent.name] = json.loads(lines[-1])["iterations_done"] if lines else 0
    return done


@pytest.mark.slow
def test_a_tuned_arm_searches_stops_early_and_trains_with_the_best(tmp_path, ray_address, db_url):
    # Trials run one at a time, the first two given: lr 0.1 learns, lr 1e-4 barely moves,
    # so ASHA stops the second at its first rung (20 iterations) whatever the timing.
    spec = parse_spec(
        body(
            [tuned_arm(grace_period=20, reduction_factor=2, start_with=[{"lr": 0.1}, {"lr": 1e-4}])]
        )
    )
    document = ResultsDocument(spec.model_dump(mode="json"))
    sink = Collector(also=document)
    options = RunOptions(
        storage_path=str(tmp_path / "ray"),
        ray_address=ray_address,
        experiment="tuned",
        max_concurrent_trials=1,
        tuning_storage=db_url,
        tuning_study_prefix="test",
    )
    assert run_study(spec, sink, options).status == "succeeded"

    (planned,) = sink.of(StudyPlanned)
    assert [(t.arm, t.trials, t.max_iterations) for t in planned.tuning] == [("tuned", 4, 120)]
    (started,) = sink.of(TuningStarted)
    assert (started.optuna_study, started.trials, started.previous) == ("test/tuned", 4, 0)
    ended = sink.of(TuningTrialEnded)
    assert sorted(e.number for e in ended) == [0, 1, 2, 3]
    by_number = {e.number: e for e in ended}
    assert by_number[0].params == {"lr": 0.1} and by_number[1].params == {"lr": 1e-4}
    assert by_number[1].state == "stopped" and by_number[1].iterations_done == 20
    for e in ended:
        assert (e.state == "completed") == (e.iterations_done == 120), e
        assert e.state in ("completed", "stopped"), e
        assert 0 <= e.value <= 1

    # The cost counted is what the trials ran, by Tune's own record of them.
    tune_record = _tune_results(tmp_path / "ray" / "tuned-tuning-tuned")
    assert len(tune_record) == 4
    assert sorted(tune_record.values()) == sorted(e.iterations_done for e in ended)
    (row,) = build_report(document.finish("succeeded"))["arms"]
    assert row["cost"]["tuning"] == sum(tune_record.values())
    assert row["cost"]["trials"] == 120 and row["cost"]["range_test"] == 0
    assert row["cost"]["total"] == sum(tune_record.values()) + 120
    assert row["cost"]["tuning_trials"] == 4
    assert row["cost"]["stopped_early"] == sum(e.state == "stopped" for e in ended)

    (best,) = sink.of(TuningEnded)
    completed = [e for e in ended if e.state == "completed"]
    top = max(completed, key=lambda e: (e.value, -e.number))
    assert (best.best_number, best.best_params, best.best_value) == (
        top.number,
        top.params,
        top.value,
    )
    (resolved,) = sink.of(ArmsResolved)
    arm = resolved.arms["tuned"]
    assert arm["tuned"] == ["lr"] and arm["policy"]["params"] == {"lr": best.best_params["lr"]}
    points = [p for e in sink.of(EvaluationPoints) for p in e.points]
    assert points and {p.lr for p in points} == {best.best_params["lr"]}
    assert [e.state for e in sink.of(TrialEnded)] == ["completed"]
    order = [type(e) for e in sink.events]
    assert order.index(TuningEnded) < order.index(ArmsResolved)

    # Optuna's record, read back as a user would: Ray tells ASHA-stopped trials COMPLETE;
    # our attributes say what happened.
    with optuna_study("test/tuned", db_url) as study:
        trials = study.trials
    assert len(trials) == 4
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.number: t.user_attrs[STATE_ATTR] for t in trials} == {
        e.number: e.state for e in ended
    }
    assert {t.number: max(t.intermediate_values) for t in trials} == {
        e.number: e.iterations_done for e in ended
    }
    # optuna-dashboard opens the same database and shows the search.
    shown = dashboard_studies(db_url)["test/tuned"]["trials"]
    assert sorted(t["number"] for t in shown) == [0, 1, 2, 3]
    attrs = {t["number"]: {a["key"]: a["value"] for a in t["user_attrs"]} for t in shown}
    assert {n: a[STATE_ATTR] for n, a in attrs.items()} == {e.number: e.state for e in ended}


@pytest.mark.slow
def test_a_tuning_trial_whose_process_dies_is_recorded_failed_and_the_search_goes_on(
    tmp_path, ray_address
):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    spec = parse_spec(body([tuned_arm(trials=3, start_with=[{"lr": 0.1}])]))
    sink = Collector()
    options = RunOptions(
        storage_path=str(tmp_path / "ray"),
        ray_address=ray_address,
        experiment="dies",
        max_concurrent_trials=1,
        tuning_storage=storage,
        fail_once_at={"tuned-tuning": 30},  # the first tuning trial's process exits at 30
    )
    assert run_study(spec, sink, options).status == "succeeded"
    ended = {e.number: e for e in sink.of(TuningTrialEnded)}
    assert sorted(ended) == [0, 1, 2]
    failed = ended[0]
    assert (failed.state, failed.iterations_done, failed.params) == ("failed", 30, {"lr": 0.1})
    assert "actor died unexpectedly" in failed.error  # Tune's own words for the death
    assert all(e.state in ("completed", "stopped") for n, e in ended.items() if n)
    (best,) = sink.of(TuningEnded)
    assert best.best_number != 0
    with optuna_study("dies/tuned", storage) as study:
        first = study.trials[0]
    # Ray would have told it COMPLETE with its last value; it is FAIL, with what it trained.
    assert first.state == TrialState.FAIL
    assert first.user_attrs == {STATE_ATTR: "failed", ITERATIONS_ATTR: 30}


CRASHING_DRIVER = """
import sys
from workers.runner import RunOptions, run_study
from workers.spec import parse_spec
import json
spec = parse_spec(json.loads(sys.argv[1]))
class Quiet:
    def emit(self, event): pass
run_study(spec, Quiet(), RunOptions(**json.loads(sys.argv[2])))
"""


@pytest.mark.slow
def test_a_search_cut_short_by_a_crash_finishes_on_the_same_optuna_study(tmp_path, ray_address):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # Tuning trials of 4,000 iterations (2-3 s each here), which ASHA lets run at least
    # 3,500: a trial is training for seconds after the first one finished.
    spec_body = body([tuned_arm(grace_period=3_500, max_iterations=4_000)], eval_every=100)
    run = {
        "storage_path": str(tmp_path / "ray"),
        "ray_address": ray_address,
        "experiment": "crash",
        "max_concurrent_trials": 1,
        "tuning_storage": storage,
        "tuning_study_prefix": "crash",
    }
    log = (tmp_path / "driver.log").open("wb")
    driver = subprocess.Popen(
        [sys.executable, "-c", CRASHING_DRIVER, json.dumps(spec_body), json.dumps(run)],
        env={**os.environ, "RAY_AUTH_MODE": "token"},
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    try:
        # Kill the driver once one trial finished and the next one is training.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if driver.poll() is not None:
                pytest.fail("the driver ended early:\n" + (tmp_path / "driver.log").read_text())
            try:
                with optuna_study("crash/tuned", storage) as study:
                    trials = study.trials
            except KeyError:
                continue  # the study is not created yet
            running = [t for t in trials if t.state == TrialState.RUNNING]
            if (
                any(t.state.is_finished() for t in trials)
                and running
                and max(running[0].intermediate_values, default=0) > 0  # it has trained
            ):
                break
        else:
            pytest.fail("the search never had a finished and a training trial")
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended by itself
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        log.close()
    with optuna_study("crash/tuned", storage) as study:
        before = study.trials
    finished_before = sum(t.state.is_finished() for t in before)
    (stale,) = [t.number for t in before if t.state == TrialState.RUNNING]
    # Tune's own restore cannot continue such a search (UpdateFinishedTrialError); a new run
    # of the study finishes it on the same Optuna study.
    sink = Collector()
    options = RunOptions(**{**run, "experiment": "crash-again"})
    assert run_study(parse_spec(spec_body), sink, options).status == "succeeded"

    (started,) = sink.of(TuningStarted)
    assert started.previous == finished_before
    ended = {e.number: e for e in sink.of(TuningTrialEnded)}
    assert ended[stale].state == "interrupted"
    assert ended[stale].iterations_done > 0  # what it trained before the crash: spent
    counted = [e for e in ended.values() if e.state != "interrupted"]
    assert len(counted) == 4  # tuning.trials, the interrupted one replaced
    with optuna_study("crash/tuned", storage) as study:
        after = study.trials
    assert len(after) == 5
    assert after[stale].state == TrialState.FAIL and STATE_ATTR not in after[stale].user_attrs
    assert not [t for t in after if t.state == TrialState.RUNNING]
    (best,) = sink.of(TuningEnded)
    assert ended[best.best_number].state == "completed"


@pytest.mark.slow
def test_cancelling_during_the_search_ends_the_study_cancelled(tmp_path, ray_address):
    # Trials of 20,000 iterations (about 15 s each here): the cancel comes mid-trial, once
    # Tune has logged a first report of one (a busy machine is slow to start trials).
    spec = parse_spec(body([tuned_arm(max_iterations=20_000, grace_period=10_000)], eval_every=100))
    cancel = threading.Event()
    folder = tmp_path / "ray" / "cancel-tuning-tuned"

    def cancel_once_training() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
            f.stat().st_size for f in folder.glob("*/result.json")
        ):
            time.sleep(0.2)
        cancel.set()

    watcher = threading.Thread(target=cancel_once_training, daemon=True)
    watcher.start()
    sink = Collector()
    options = RunOptions(
        storage_path=str(tmp_path / "ray"), ray_address=ray_address, experiment="cancel"
    )
    assert run_study(spec, sink, options, cancel=cancel).status == "cancelled"
    watcher.join()
    assert not sink.of(TuningEnded) and not sink.of(ArmsResolved)
    ended = sink.of(TuningTrialEnded)
    assert "cancelled" in {e.state for e in ended}, ended
    assert all(e.state == "cancelled" for e in ended if e.iterations_done < 20_000), ended
