"""DatabaseSink: a study's events end up in the database as results.json would hold them."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from service.db import DatabaseUnavailable, make_engine
from service.driver import PhaseSink
from service.sinks import DatabaseSink
from service.store import Store
from tests.factories import study_spec
from workers.events import (
    RANGE_TEST_TRIAL_ID,
    ArmsResolved,
    BoundsFound,
    EvalPoint,
    EvaluationPoints,
    Event,
    PlannedTrial,
    PlannedTuning,
    RangeTestEnded,
    RangeTestPoint,
    RangeTestPoints,
    StudyPlanned,
    TrialEnded,
    TrialStarted,
    TuningEnded,
    TuningStarted,
    TuningTrialEnded,
)
from workers.results import ResultsDocument

SPEC = study_spec()
TRIALS = tuple(
    PlannedTrial(f"{arm}-s{seed}", arm, seed, 60)
    for arm in ("fixed", "triangular")
    for seed in (0, 1)
)
ARMS = {
    "fixed": {"policy": {"name": "fixed", "params": {"lr": 0.05}}, "auto": [], "iterations": 60},
    "triangular": {
        "policy": {"name": "triangular", "params": {"base_lr": 0.01, "max_lr": 0.1}},
        "auto": ["base_lr", "max_lr"],
        "iterations": 60,
    },
}


def eval_point(iteration: int, seed: int) -> EvalPoint:
    accuracy = 0.1 + iteration / 100 + seed / 1000
    train_loss = None if iteration == 0 else 2.0 - iteration / 60
    return EvalPoint(iteration, iteration / 21, 0.05, train_loss, accuracy, 1.0, iteration / 50)


def trial_events(trial: PlannedTrial) -> list[Event]:
    """A trial evaluated every 10 iterations; seed 1 fails over at 30 and resumes from its
    checkpoint at 20 on another node, so it reports 30 a second time."""
    started = TrialStarted(trial.trial_id, trial.arm, trial.seed, trial.iterations, "node-a")
    points = [eval_point(i, trial.seed) for i in range(0, 61, 10)]
    events: list[Event] = [started, EvaluationPoints(trial.trial_id, tuple(points[:4]))]
    if trial.seed == 1:
        events.append(TrialStarted(**{**asdict(started), "node_id": "node-b"}))
        events.append(EvaluationPoints(trial.trial_id, tuple(points[3:5])))
    else:
        events.append(EvaluationPoints(trial.trial_id, (points[4],)))
    events.append(EvaluationPoints(trial.trial_id, tuple(points[5:])))
    node = "node-b" if trial.seed == 1 else "node-a"
    events.append(TrialEnded(trial.trial_id, "completed", 60, 1.25, node_id=node))
    return events


RANGE_POINTS = tuple(
    RangeTestPoint(i, 0.001 + i * 0.02, 2.3 - i / 50, 2.3 - i / 60, None if i % 10 else i / 100)
    for i in range(100)
)
STUDY_START: list[Event] = [
    StudyPlanned(21, TRIALS),
    TrialStarted(RANGE_TEST_TRIAL_ID, "range_test", 0, 100, "node-a"),
    *[RangeTestPoints(RANGE_POINTS[i : i + 25]) for i in range(0, 100, 25)],
    RangeTestEnded(99, "completed", "node-a"),
    BoundsFound(0.01, 0.1, "accuracy", "accuracy rises from 0.01 and flattens at 0.1"),
    ArmsResolved(ARMS),
]


def expected_trials() -> list[dict[str, Any]]:
    return [
        {
            "trial_id": t.trial_id,
            "arm": t.arm,
            "seed": t.seed,
            "state": "completed",
            "error": None,
            "node_id": "node-b" if t.seed == 1 else "node-a",
            "iterations": 60,
            "iterations_done": 60,
            "wall_s": 1.25,
            "points": [asdict(eval_point(i, t.seed)) for i in range(0, 61, 10)],
        }
        for t in TRIALS
    ]


@pytest.fixture
def study_id(store: Store) -> str:
    record, _ = store.create_api_key("alice")
    study, _ = store.create_study(record.owner.id, SPEC, "digits")
    store.transition(study.id, "running", expected={"queued"})
    return study.id


def check_results(store: Store, study_id: str) -> None:
    results = store.results(study_id)
    assert results is not None
    assert results["iterations_per_epoch"] == 21
    assert results["bounds"] == {
        "base_lr": 0.01,
        "max_lr": 0.1,
        "method": "accuracy",
        "reason": "accuracy rises from 0.01 and flattens at 0.1",
    }
    assert results["arms"] == ARMS
    assert results["range_test"] == {
        "points": [asdict(p) for p in RANGE_POINTS],
        "stopped_at": 99,
        "stop_reason": "completed",
        "min_lr": 0.001,
        "max_lr": 2.0,
        "ramp": "linear",
        "node_id": "node-a",
    }
    assert results["trials"] == expected_trials()


def test_a_study_event_sequence_becomes_its_results(store: Store, study_id: str) -> None:
    sink = DatabaseSink(store, study_id, flush_every=50, flush_interval_s=60)
    for event in STUDY_START + [e for t in TRIALS for e in trial_events(t)]:
        sink.emit(event)
    sink.close()
    check_results(store, study_id)


def test_trials_emitting_from_threads_at_once(store: Store, study_id: str) -> None:
    sink = DatabaseSink(store, study_id, flush_every=3, flush_interval_s=60)
    for event in STUDY_START:
        sink.emit(event)

    def run_trial(trial: PlannedTrial) -> None:
        for event in trial_events(trial):
            sink.emit(event)

    threads = [threading.Thread(target=run_trial, args=(t,)) for t in TRIALS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()
    check_results(store, study_id)


def stored_points(store: Store, study_id: str) -> list[int]:
    results = store.results(study_id)
    assert results is not None
    return [p["iteration"] for t in results["trials"] for p in t["points"]]


def test_points_wait_for_a_full_batch_or_the_trials_end(store: Store, study_id: str) -> None:
    sink = DatabaseSink(store, study_id, flush_every=3, flush_interval_s=60)
    sink.emit(StudyPlanned(21, TRIALS[:1]))
    sink.emit(EvaluationPoints("fixed-s0", (eval_point(0, 0), eval_point(10, 0))))
    assert stored_points(store, study_id) == []
    sink.emit(EvaluationPoints("fixed-s0", (eval_point(20, 0),)))
    assert stored_points(store, study_id) == [0, 10, 20]
    sink.emit(EvaluationPoints("fixed-s0", (eval_point(30, 0),)))
    sink.emit(TrialEnded("fixed-s0", "diverged", 30, 0.5, error="loss is nan"))
    assert stored_points(store, study_id) == [0, 10, 20, 30]
    assert store.trials(study_id)[0].state == "diverged"

    overdue = DatabaseSink(store, study_id, flush_every=1000, flush_interval_s=0)
    overdue.emit(EvaluationPoints("fixed-s0", (eval_point(40, 0),)))
    assert stored_points(store, study_id) == [0, 10, 20, 30, 40]


def test_points_survive_a_database_outage(store: Store, study_id: str) -> None:
    down = Store(make_engine("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1"))
    sink = DatabaseSink(down, study_id, flush_every=1, retry_for_s=0.3)
    with pytest.raises(DatabaseUnavailable):
        sink.emit(StudyPlanned(21, TRIALS[:1]))
    with pytest.raises(DatabaseUnavailable):
        sink.emit(EvaluationPoints("fixed-s0", (eval_point(0, 0),)))
    down.engine.dispose()
    sink.store = store  # the database is back
    sink.close()
    assert stored_points(store, study_id) == [0]  # written after the plan that came first


# --- tuned arms -------------------------------------------------------------------------

SPACE = {"lr": {"type": "float", "low": 0.0001, "high": 1.0, "log": True}}
TUNED_TRIALS = (PlannedTrial("fixed-tuned-s0", "fixed-tuned", 0, 60),)
PLANNED_TUNING = (PlannedTuning("fixed-tuned", 5, 40),)
TUNED_ARMS = {
    "fixed-tuned": {
        "optimizer": {"name": "sgd", "options": {"momentum": 0.9}},
        "policy": {"name": "fixed", "params": {"lr": 0.05}},
        "auto": [],
        "tuned": ["lr"],
        "iterations": 60,
        "cycle_momentum": False,
    }
}


def tuning_trial(number: int, lr: float, **changes: Any) -> TuningTrialEnded:
    values: dict[str, Any] = {
        "arm": "fixed-tuned",
        "number": number,
        "params": {"lr": lr},
        "state": "completed",
        "iterations_done": 40,
        "value": 0.5 + lr,
        "wall_s": 0.25 * (number + 1),
        "node_id": "node-a",
    }
    return TuningTrialEnded(**{**values, **changes})


# Trials end out of order (Tune runs them in parallel). Trial 1 was running when the driver
# died: the restarted search reports it interrupted and runs trial 5 in its place. Trial 2
# diverged, 4 failed before it evaluated, 3 was stopped early by ASHA and is told twice
# (the second time as a restarted search replays it: without its node).
TUNING_EVENTS: list[Event] = [
    TuningStarted("fixed-tuned", "clrstudy-x/fixed-tuned", 5, 40, SPACE),
    tuning_trial(2, 0.9, state="diverged", iterations_done=12, value=0.0, error="loss is nan"),
    tuning_trial(0, 0.03),
    TuningStarted("fixed-tuned", "clrstudy-x/fixed-tuned", 5, 40, SPACE, previous=2),
    tuning_trial(1, 0.2, state="interrupted", iterations_done=20, value=None, node_id=None),
    tuning_trial(3, 0.2, state="stopped", iterations_done=20, value=0.6, node_id="node-b"),
    tuning_trial(3, 0.2, state="stopped", iterations_done=20, value=0.6, node_id=None),
    tuning_trial(5, 0.05),
    tuning_trial(4, 0.5, state="failed", iterations_done=0, value=None, error="CUDA OOM"),
    TuningEnded("fixed-tuned", 5, {"lr": 0.05}, 0.55),
    ArmsResolved(TUNED_ARMS),
]
EXPECTED_TUNING = {
    "fixed-tuned": {
        "optuna_study": "clrstudy-x/fixed-tuned",
        "trials_planned": 5,
        "max_iterations": 40,
        "space": SPACE,
        "trials": [
            {"number": 0, "params": {"lr": 0.03}, "state": "completed", "iterations_done": 40,
             "value": 0.53, "wall_s": 0.25, "error": None, "node_id": "node-a"},
            {"number": 1, "params": {"lr": 0.2}, "state": "interrupted", "iterations_done": 20,
             "value": None, "wall_s": 0.5, "error": None, "node_id": None},
            {"number": 2, "params": {"lr": 0.9}, "state": "diverged", "iterations_done": 12,
             "value": 0.0, "wall_s": 0.75, "error": "loss is nan", "node_id": "node-a"},
            {"number": 3, "params": {"lr": 0.2}, "state": "stopped", "iterations_done": 20,
             "value": 0.6, "wall_s": 1.0, "error": None, "node_id": "node-b"},
            {"number": 4, "params": {"lr": 0.5}, "state": "failed", "iterations_done": 0,
             "value": None, "wall_s": 1.25, "error": "CUDA OOM", "node_id": "node-a"},
            {"number": 5, "params": {"lr": 0.05}, "state": "completed", "iterations_done": 40,
             "value": 0.55, "wall_s": 1.5, "error": None, "node_id": "node-a"},
        ],
        "best": {"number": 5, "params": {"lr": 0.05}, "value": 0.55},
    }
}  # fmt: skip
TUNED_STUDY: list[Event] = [
    StudyPlanned(21, TUNED_TRIALS, PLANNED_TUNING),
    *TUNING_EVENTS,
    TrialStarted("fixed-tuned-s0", "fixed-tuned", 0, 60, "node-a"),
    EvaluationPoints("fixed-tuned-s0", tuple(eval_point(i, 0) for i in range(0, 61, 20))),
    TrialEnded("fixed-tuned-s0", "completed", 60, 1.5, node_id="node-a"),
]


def test_both_sinks_build_the_same_results_for_a_tuned_study(
    store: Store, study_id: str, tmp_path: Path
) -> None:
    sink = DatabaseSink(store, study_id, flush_every=2, flush_interval_s=60)
    path = tmp_path / "results.json"
    document = ResultsDocument(SPEC, path, study_id=study_id, write_every_s=3600)
    for event in TUNED_STUDY:
        sink.emit(event)
        document.emit(event)
    sink.close()

    stored = store.results(study_id)
    assert stored is not None
    assert stored["tuning"] == EXPECTED_TUNING
    assert stored["arms"] == TUNED_ARMS and stored["arms"]["fixed-tuned"]["tuned"] == ["lr"]
    written = json.loads(path.read_text())  # what `clrstudy run` leaves on disk
    # Everything but the start time, which each sink takes from its own clock.
    assert {k: v for k, v in stored.items() if k != "started_at"} == {
        k: v for k, v in written.items() if k != "started_at"
    }
    progress = store.progress(study_id)
    assert (progress.tuning_trials_done, progress.tuning_trials_total) == (5, 5)


def test_tuning_events_reach_the_database_at_once(store: Store, study_id: str) -> None:
    sink = DatabaseSink(store, study_id, flush_every=1000, flush_interval_s=60)
    sink.emit(StudyPlanned(21, TUNED_TRIALS, PLANNED_TUNING))
    planned = store.results(study_id)
    assert planned is not None
    assert planned["tuning"] == {
        "fixed-tuned": {"optuna_study": None, "trials_planned": 5, "max_iterations": 40,
                        "space": {}, "trials": [], "best": None},
    }  # fmt: skip
    sink.emit(TUNING_EVENTS[0])
    sink.emit(TUNING_EVENTS[1])
    tuning = store.tuning(study_id)["fixed-tuned"]
    assert tuning["optuna_study"] == "clrstudy-x/fixed-tuned" and tuning["space"] == SPACE
    assert [t["number"] for t in tuning["trials"]] == [2] and tuning["best"] is None
    for event in TUNING_EVENTS[2:-1]:
        sink.emit(event)
    assert store.tuning(study_id) == EXPECTED_TUNING


def test_phase_follows_range_test_tuning_and_trials(store: Store, study_id: str) -> None:
    sink = PhaseSink(DatabaseSink(store, study_id), store, study_id)

    def phase() -> str:
        study = store.get_study(study_id)
        assert study is not None
        return study.phase

    sink.emit(StudyPlanned(21, TUNED_TRIALS, PLANNED_TUNING))
    assert phase() == "queued"
    sink.emit(RangeTestPoints(RANGE_POINTS[:10]))
    assert phase() == "range_test"
    sink.emit(TUNING_EVENTS[0])
    assert phase() == "tuning"
    for event in TUNING_EVENTS[1:-1]:
        sink.emit(event)
        assert phase() == "tuning"
    sink.emit(ArmsResolved(TUNED_ARMS))
    assert phase() == "trials"
