"""DatabaseSink: a study's events end up in the database as results.json would hold them."""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

import pytest

from service.db import DatabaseUnavailable, make_engine
from service.sinks import DatabaseSink
from service.store import Store
from workers.sink import (
    RANGE_TEST_TRIAL_ID,
    ArmsResolved,
    BoundsFound,
    EvalPoint,
    EvaluationPoints,
    Event,
    PlannedTrial,
    RangeTestEnded,
    RangeTestPoint,
    RangeTestPoints,
    StudyPlanned,
    TrialEnded,
    TrialStarted,
)

SPEC: dict[str, Any] = {
    "name": "digits",
    "range_test": {"min_lr": 0.001, "max_lr": 2.0, "ramp": "linear"},
    "arms": [{"name": "fixed"}, {"name": "triangular"}],
    "seeds": [0, 1],
    "iterations": 60,
}
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
