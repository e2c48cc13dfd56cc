"""The store's behaviour, on every database backend."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.db import DatabaseUnavailable, make_engine, upgrade
from service.models import ApiKey, Study, TuningTrial, utcnow
from service.store import (
    DuplicateScheduleName,
    InvalidTransition,
    ScheduleRecord,
    Store,
    StudyRecord,
)
from tests.factories import study_spec
from workers.events import (
    EvalPoint,
    PlannedTrial,
    PlannedTuning,
    RangeTestPoint,
    TuningEnded,
    TuningStarted,
    TuningTrialEnded,
)

SPEC = study_spec()
RESULT_KEYS = {
    "format", "study_id", "status", "error", "spec", "started_at", "finished_at", "wall_s",
    "iterations_per_epoch", "range_test", "bounds", "arms", "tuning", "trials",
}  # fmt: skip
TRIAL_KEYS = {
    "trial_id", "arm", "seed", "state", "error", "node_id", "iterations", "iterations_done",
    "wall_s", "points",
}  # fmt: skip
POINT_KEYS = {"iteration", "epoch", "lr", "train_loss", "accuracy", "loss", "elapsed_s", "d"}


def owner_id(store: Store, name: str = "alice", admin: bool = False) -> int:
    record, _ = store.create_api_key(name, admin=admin)
    return record.owner.id


def new_study(store: Store, owner: int, name: str = "digits", key: str | None = None) -> str:
    study, created = store.create_study(owner, SPEC, name, idempotency_key=key)
    assert created
    return study.id


def point(iteration: int, accuracy: float = 0.5, loss: float = 1.0) -> EvalPoint:
    return EvalPoint(iteration, iteration / 10, 0.1, 1.0, accuracy, loss, iteration / 100)


def plan(store: Store, study_id: str) -> None:
    trials = [PlannedTrial(f"{arm}-s{s}", arm, s, 100) for arm in ("fixed", "triangular")
              for s in (0, 1)]  # fmt: skip
    store.record_plan(study_id, 21, trials)


def run_concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Run calls in threads released together; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_api_keys_are_stored_hashed_and_revocable(store: Store, engine: Engine) -> None:
    record, key = store.create_api_key("alice", admin=True)
    assert key.startswith("clr_") and len(key) > 40
    with engine.connect() as connection:
        stored = connection.execute(select(ApiKey.key_hash, ApiKey.prefix)).one()
    assert key not in stored.key_hash and len(stored.key_hash) == 64
    assert key.startswith(stored.prefix) and stored.prefix == record.prefix

    owner = store.authenticate(key)
    assert owner is not None and owner.name == "alice" and owner.admin
    assert store.authenticate(key + "x") is None

    second, second_key = store.create_api_key("alice", admin=True)
    assert second.owner == record.owner and second_key != key
    assert store.revoke_api_key(record.id)
    assert not store.revoke_api_key(record.id)
    assert store.authenticate(key) is None
    assert store.authenticate(second_key) == owner
    with pytest.raises(ValueError, match="admin False"):
        store.create_api_key("alice", admin=False)


def test_idempotency_key_returns_the_same_study(store: Store) -> None:
    alice, bob = owner_id(store, "alice"), owner_id(store, "bob")
    first, created = store.create_study(alice, SPEC, "a", idempotency_key="k1")
    again, created_again = store.create_study(alice, SPEC, "a", idempotency_key="k1")
    assert created and not created_again and again == first
    other, other_created = store.create_study(bob, SPEC, "a", idempotency_key="k1")
    assert other_created and other.id != first.id

    racing = run_concurrently(
        *[partial(store.create_study, alice, SPEC, "race", idempotency_key="k2")] * 2
    )
    assert racing[0][0].id == racing[1][0].id
    assert sorted(created for _, created in racing) == [False, True]


def test_owners_see_only_their_studies(store: Store) -> None:
    alice, bob = owner_id(store, "alice"), owner_id(store, "bob")
    mine = new_study(store, alice, "Digits 100%")
    theirs = new_study(store, bob, "digits")
    assert store.get_study(mine, alice) is not None
    assert store.get_study(theirs, alice) is None
    assert store.get_study(theirs) is not None  # admin: any owner
    assert store.get_study("no-such-id") is None
    studies, total = store.list_studies(alice)
    assert [s.id for s in studies] == [mine] and total == 1
    assert store.list_studies(None)[1] == 2


def test_list_filters_and_pages(store: Store) -> None:
    alice = owner_id(store)
    ids = [new_study(store, alice, name) for name in ("cifar", "Digits A", "digits_b", "50%")]
    assert store.transition(ids[0], "running", expected={"queued"})

    page, total = store.list_studies(alice, limit=2, offset=1)
    assert total == 4 and [s.id for s in page] == [ids[2], ids[1]]  # newest first
    assert {s.id for s in store.list_studies(alice, name="DIGITS")[0]} == {ids[1], ids[2]}
    assert [s.id for s in store.list_studies(alice, name="_")[0]] == [ids[2]]  # literal
    assert [s.id for s in store.list_studies(alice, name="%")[0]] == [ids[3]]
    assert [s.id for s in store.list_studies(alice, status="running")[0]] == [ids[0]]
    with pytest.raises(ValueError, match="status 'done' is not one of"):
        store.list_studies(alice, status="done")


def test_lifecycle_transitions(store: Store) -> None:
    study_id = new_study(store, owner_id(store))
    with pytest.raises(InvalidTransition, match="'queued' to 'succeeded'"):
        store.transition(study_id, "succeeded", expected={"queued"})
    assert store.transition(study_id, "running", expected={"queued"}, phase="range_test")
    running = store.get_study(study_id)
    assert running is not None and running.started_at is not None
    assert (running.status, running.phase, running.finished_at) == ("running", "range_test", None)
    assert not store.transition(study_id, "cancelled", expected={"queued"})  # it moved on
    assert store.transition(study_id, "succeeded", expected={"running"})
    done = store.get_study(study_id)
    assert done is not None and (done.status, done.phase) == ("succeeded", "done")
    assert done.finished_at is not None and done.finished_at >= running.started_at
    for terminal in ("succeeded", "failed", "cancelled"):
        with pytest.raises(InvalidTransition):
            store.transition(study_id, "running", expected={terminal})

    failed = new_study(store, owner_id(store, "bob"))
    assert store.transition(failed, "failed", expected={"queued"}, error="bad spec")
    record = store.get_study(failed)
    assert record is not None and (record.status, record.error) == ("failed", "bad spec")


def test_only_one_of_two_competing_transitions_wins(store: Store) -> None:
    owner = owner_id(store)
    for rival in ("running", "cancelled"):
        study_id = new_study(store, owner)
        won = run_concurrently(
            partial(store.transition, study_id, "running", expected={"queued"}),
            partial(store.transition, study_id, rival, expected={"queued"}),
        )
        assert sorted(won) == [False, True]


def test_cancel(store: Store) -> None:
    owner = owner_id(store)
    queued, running = new_study(store, owner), new_study(store, owner)
    store.transition(running, "running", expected={"queued"})

    cancelled = store.request_cancel(queued)
    assert cancelled is not None and cancelled.status == "cancelled"
    flagged = store.request_cancel(running)
    assert flagged is not None and flagged.status == "running" and flagged.cancel_requested
    assert [s.id for s in store.running_studies()] == [running]
    with pytest.raises(InvalidTransition, match="already cancelled"):
        store.request_cancel(queued)
    assert store.request_cancel("no-such-id") is None


def test_the_next_study_serves_owners_in_turn_within_both_limits(store: Store) -> None:
    alice, bob, carol = (owner_id(store, name) for name in ("alice", "bob", "carol"))
    a1, a2, a3, b1, b2, c1 = (new_study(store, o) for o in (alice,) * 3 + (bob,) * 2 + (carol,))
    started = []
    while (study := store.claim_next_study(max_running=10, max_running_per_owner=2)) is not None:
        assert study.status == "running" and study.started_at is not None
        started.append(study.id)
    # Owners who never ran come first (oldest queued first), then whoever waited longest;
    # alice's third study waits: she runs two, her limit.
    assert started == [a1, b1, c1, a2, b2]
    assert store.get_study(a3).status == "queued"  # type: ignore[union-attr]
    store.transition(c1, "succeeded", expected={"running"})
    assert store.claim_next_study(max_running=4, max_running_per_owner=3) is None  # 4 run
    assert store.claim_next_study(max_running=5, max_running_per_owner=3).id == a3  # type: ignore[union-attr]
    store.set_submission_id(a3, f"clrstudy-{a3}")
    assert store.get_study(a3).submission_id == f"clrstudy-{a3}"  # type: ignore[union-attr]


def count_inserts(engine: Engine, table: str) -> list[int]:
    """Collects, per INSERT into `table` sent to the database, how many rows it carried."""
    sent: list[int] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith(f"INSERT INTO {table}"):
            many = isinstance(parameters, list)
            sent.append(len(parameters) if many else 1)

    event.listen(engine, "before_cursor_execute", before)
    return sent


def test_eval_points_are_batched_and_idempotent(store: Store, engine: Engine) -> None:
    study_id = new_study(store, owner_id(store))
    plan(store, study_id)
    inserts = count_inserts(engine, "clr_eval_points")
    batch = [point(i) for i in range(0, 100, 5)]
    store.record_eval_points(study_id, "fixed-s0", batch)
    assert len(inserts) == 1  # one statement for the whole batch
    store.record_eval_points(study_id, "fixed-s0", [*batch[10:], point(100)])  # a resume
    points = store.results(study_id)["trials"][0]["points"]  # type: ignore[index]
    assert [p["iteration"] for p in points] == [*range(0, 100, 5), 100]
    assert store.trials(study_id)[0].iterations_done == 100
    with pytest.raises(ValueError, match="trial_id 'nope-s0' is not a trial"):
        store.record_eval_points(study_id, "nope-s0", batch)


def test_non_finite_numbers_are_stored_as_null(store: Store) -> None:
    study_id = new_study(store, owner_id(store))
    plan(store, study_id)
    diverged = dataclasses.replace(point(5, loss=math.nan), d=math.inf)  # an estimated step size
    store.record_eval_points(study_id, "fixed-s0", [diverged])
    store.record_range_test_points(study_id, [RangeTestPoint(0, 0.1, math.inf, 2.0)])
    results = store.results(study_id)
    assert results is not None
    assert results["trials"][0]["points"][0]["loss"] is None
    assert results["trials"][0]["points"][0]["d"] is None
    assert results["range_test"]["points"][0]["loss"] is None


def test_trial_lifecycle_and_progress(store: Store) -> None:
    study_id = new_study(store, owner_id(store))
    plan(store, study_id)
    progress = store.progress(study_id)
    assert (progress.trials_done, progress.trials_total) == (0, 4)
    assert (progress.iterations_done, progress.iterations_total) == (0, 400)

    store.upsert_trial_started(study_id, "fixed-s0", "fixed", 0, 100, node_id="n1")
    first_start = store.trials(study_id)[0].started_at
    store.record_eval_points(study_id, "fixed-s0", [point(50, accuracy=0.7)])
    store.upsert_trial_started(study_id, "fixed-s0", "fixed", 0, 100, node_id="n2")  # resumed
    store.upsert_trial_started(study_id, "extra-s0", "extra", 0, 10)  # not planned
    store.record_eval_points(study_id, "triangular-s1", [point(20, accuracy=0.9)])
    store.record_trial_end(study_id, "triangular-s1", "diverged", 20, 1.5, error="loss is nan")

    trials = {t.trial_id: t for t in store.trials(study_id)}
    assert (trials["fixed-s0"].state, trials["fixed-s0"].node_id) == ("running", "n2")
    assert trials["fixed-s0"].started_at == first_start
    assert trials["extra-s0"].state == "running"
    ended = trials["triangular-s1"]
    assert (ended.state, ended.error, ended.wall_s) == ("diverged", "loss is nan", 1.5)
    assert ended.ended_at is not None
    progress = store.progress(study_id)
    assert (progress.trials_done, progress.trials_total) == (1, 5)
    assert (progress.iterations_done, progress.iterations_total) == (150, 410)
    assert progress.best_accuracy == {"fixed": 0.7, "triangular": 0.9}
    with pytest.raises(ValueError, match="state 'running' is not one of"):
        store.record_trial_end(study_id, "fixed-s0", "running", 1, 1.0)


def test_results_document_has_the_documented_shape(store: Store) -> None:
    study_id = new_study(store, owner_id(store))
    assert set(store.results(study_id) or ()) == RESULT_KEYS
    empty = store.results(study_id)
    assert empty is not None and empty["range_test"] is None and empty["trials"] == []
    assert empty["tuning"] == {}
    assert store.results("no-such-id") is None

    store.transition(study_id, "running", expected={"queued"})
    plan(store, study_id)
    range_points = [RangeTestPoint(i, 0.01 * i, 2.0, 2.0) for i in (3, 1)]
    store.record_range_test_points(study_id, range_points)
    store.record_range_test_end(study_id, 3, "completed", node_id="n1")
    bounds = {"base_lr": 0.01, "max_lr": 0.1, "method": "accuracy", "reason": "rise"}
    store.record_bounds(study_id, bounds)
    arms = {"fixed": {"policy": {"name": "fixed", "params": {"lr": 0.05}}, "iterations": 100}}
    store.record_arms(study_id, arms)
    store.record_eval_points(study_id, "fixed-s1", [point(i) for i in (30, 10, 20)])
    store.transition(study_id, "succeeded", expected={"running"})

    results = store.results(study_id)
    assert results is not None and set(results) == RESULT_KEYS
    assert results["tuning"] == {}  # no arm is tuned
    assert (results["format"], results["study_id"], results["status"]) == (1, study_id, "succeeded")
    assert results["spec"] == SPEC and results["iterations_per_epoch"] == 21
    assert results["bounds"] == bounds and results["arms"] == arms
    assert results["wall_s"] is not None and results["wall_s"] >= 0
    assert results["started_at"].endswith("+00:00")
    range_test = results["range_test"]
    assert [p["iteration"] for p in range_test["points"]] == [1, 3]
    assert (range_test["stopped_at"], range_test["stop_reason"], range_test["node_id"]) == (
        3,
        "completed",
        "n1",
    )
    sweep = (range_test["min_lr"], range_test["max_lr"], range_test["ramp"])
    assert sweep == (0.001, 2.0, "linear")
    assert [t["trial_id"] for t in results["trials"]] == [
        "fixed-s0", "fixed-s1", "triangular-s0", "triangular-s1",
    ]  # fmt: skip
    trial = results["trials"][1]
    assert set(trial) == TRIAL_KEYS and trial["state"] == "pending"
    assert [p["iteration"] for p in trial["points"]] == [10, 20, 30]
    assert set(trial["points"][0]) == POINT_KEYS


SPACE = {"lr": {"type": "float", "low": 0.0001, "high": 1.0, "log": True}}


def tuning_trial(number: int, **changes: Any) -> TuningTrialEnded:
    values: dict[str, Any] = {
        "arm": "fixed",
        "number": number,
        "params": {"lr": 0.01 * (number + 1)},
        "state": "completed",
        "iterations_done": 50,
        "value": 0.8,
        "wall_s": 2.0,
    }
    return TuningTrialEnded(**{**values, **changes})


def test_a_queued_study_lists_its_planned_tuning(store: Store) -> None:
    study_id = new_study(store, owner_id(store))
    store.record_plan(study_id, 21, [], [PlannedTuning("fixed", 8, 50), PlannedTuning("b", 2, 9)])
    results = store.results(study_id)
    assert results is not None and results["status"] == "queued"
    assert results["tuning"] == {
        "fixed": {"optuna_study": None, "trials_planned": 8, "max_iterations": 50,
                  "space": {}, "trials": [], "best": None},
        "b": {"optuna_study": None, "trials_planned": 2, "max_iterations": 9,
              "space": {}, "trials": [], "best": None},
    }  # fmt: skip
    progress = store.progress(study_id)
    assert (progress.tuning_trials_done, progress.tuning_trials_total) == (0, 10)


def test_a_restarted_study_keeps_its_tuning(store: Store) -> None:
    study_id = new_study(store, owner_id(store))
    store.transition(study_id, "running", expected={"queued"})
    store.record_plan(study_id, 21, [], [PlannedTuning("fixed", 8, 50)])
    store.record_tuning_started(study_id, TuningStarted("fixed", "clrstudy-x/fixed", 8, 50, SPACE))
    store.record_tuning_trial_end(study_id, tuning_trial(0))
    store.record_tuning_end(study_id, TuningEnded("fixed", 0, {"lr": 0.01}, 0.8))
    before = store.tuning(study_id)
    # The driver starts again: the plan comes again, then the search (with what it kept).
    store.record_plan(study_id, 21, [], [PlannedTuning("fixed", 8, 50)])
    assert store.tuning(study_id) == before
    store.record_tuning_started(
        study_id, TuningStarted("fixed", "clrstudy-x/fixed", 8, 50, SPACE, previous=1)
    )
    assert store.tuning(study_id) == before
    fixed = before["fixed"]
    assert (fixed["optuna_study"], fixed["space"]) == ("clrstudy-x/fixed", SPACE)
    assert fixed["best"] == {"number": 0, "params": {"lr": 0.01}, "value": 0.8}
    assert [t["number"] for t in fixed["trials"]] == [0]


def test_a_tuning_trial_ended_twice_is_stored_once(store: Store, engine: Engine) -> None:
    study_id = new_study(store, owner_id(store))
    store.record_tuning_trial_end(study_id, tuning_trial(1))
    store.record_tuning_trial_end(study_id, tuning_trial(1))
    other = new_study(store, owner_id(store, "bob"))  # the same number in another study
    store.record_tuning_trial_end(other, tuning_trial(1))
    again = tuning_trial(1, state="stopped", iterations_done=20, value=0.7, node_id="n2")
    store.record_tuning_trial_end(study_id, again)
    store.record_tuning_trial_end(study_id, tuning_trial(0, arm="other"))  # another arm
    store.record_tuning_trial_end(study_id, replace(again, node_id=None))  # a restart's replay
    with engine.connect() as connection:
        rows = connection.execute(
            select(TuningTrial.arm, TuningTrial.number).where(TuningTrial.study_id == study_id)
        ).all()
    assert sorted(rows) == [("fixed", 1), ("other", 0)]
    trials = store.tuning(study_id)["fixed"]["trials"]
    assert trials == [
        {"number": 1, "params": {"lr": 0.02}, "state": "stopped", "iterations_done": 20,
         "value": 0.7, "wall_s": 2.0, "error": None, "node_id": "n2"},
    ]  # fmt: skip
    assert store.tuning(other)["fixed"]["trials"][0]["state"] == "completed"


def test_tuning_trials_sorted_counted_and_checked(store: Store, engine: Engine) -> None:
    study_id = new_study(store, owner_id(store))
    store.record_plan(study_id, 21, [], [PlannedTuning("fixed", 3, 50)])
    for number in (10, 2, 7):
        store.record_tuning_trial_end(study_id, tuning_trial(number))
    store.record_tuning_trial_end(study_id, tuning_trial(3, state="interrupted", value=math.nan))
    store.record_tuning_trial_end(study_id, tuning_trial(11, state="cancelled"))
    tuning = store.tuning(study_id)["fixed"]
    assert [t["number"] for t in tuning["trials"]] == [2, 3, 7, 10, 11]
    assert tuning["trials"][1]["value"] is None  # NaN is no JSON number
    progress = store.progress(study_id)
    assert (progress.tuning_trials_done, progress.tuning_trials_total) == (3, 3)

    with pytest.raises(ValueError, match="state 'running' is not one of"):
        store.record_tuning_trial_end(study_id, tuning_trial(4, state="running"))
    row = {"study_id": study_id, "arm": "fixed", "number": 5, "params": {}, "state": "running",
           "iterations_done": 0, "ended_at": utcnow()}  # fmt: skip
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(TuningTrial).values(**row))  # the database checks too
    with engine.begin() as connection:
        connection.execute(update(Study).where(Study.id == study_id).values(phase="tuning"))
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(update(Study).where(Study.id == study_id).values(phase="tune"))
    with engine.begin() as connection:
        connection.execute(delete(Study).where(Study.id == study_id))
        left = connection.scalar(select(func.count()).select_from(TuningTrial))
    assert left == 0  # deleting a study deletes its tuning trials


# --- schedules ------------------------------------------------------------------------------

CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def nightly(store: Store, owner: int, name: str = "nightly") -> ScheduleRecord:
    """A schedule at 02:00 Berlin time, created at CREATED: first due 2026-03-02 01:00 UTC."""
    return store.create_schedule(
        owner,
        name,
        "0 2 * * *",
        "Europe/Berlin",
        SPEC,
        now=CREATED,
        points_threshold=2.0,
        iterations_fraction=0.25,
    )


def test_a_schedule_is_due_from_its_first_due_time(store: Store) -> None:
    schedule = nightly(store, owner_id(store))
    assert schedule.next_run_at == datetime(2026, 3, 2, 1, tzinfo=UTC)
    assert store.due_schedules(datetime(2026, 3, 2, 0, 59, tzinfo=UTC)) == []
    assert store.due_schedules(schedule.next_run_at) == [schedule]
    with pytest.raises(DuplicateScheduleName, match="name 'nightly'"):
        nightly(store, schedule.owner_id)


def test_a_stale_or_repeated_claim_records_nothing(store: Store) -> None:
    schedule = nightly(store, owner_id(store))
    due, following = schedule.next_run_at, datetime(2026, 3, 3, 1, tzinfo=UTC)
    assert store.claim_schedule_run(schedule, due, following) is not None
    # A second process read the schedule before the claim: its conditional UPDATE misses.
    assert store.claim_schedule_run(schedule, due, following) is None
    # One that read it after, for the same due time: the unique constraint refuses the run,
    # and the rolled back UPDATE leaves next_run_at as it was.
    fresh = store.get_schedule(schedule.id)
    assert fresh is not None
    assert store.claim_schedule_run(fresh, due, datetime(2026, 3, 4, 1, tzinfo=UTC)) is None
    assert (store.get_schedule(schedule.id) or fresh).next_run_at == following
    assert len(store.schedule_runs(schedule.id)) == 1


def test_schedules_survive_a_restart(store: Store, db_url: str) -> None:
    created = nightly(store, owner_id(store))
    restarted = make_engine(db_url)  # a new process's engine: nothing cached
    try:
        assert Store(restarted).list_schedules() == [created]
    finally:
        restarted.dispose()


def test_records_are_frozen(store: Store) -> None:
    study = store.get_study(new_study(store, owner_id(store)))
    assert isinstance(study, StudyRecord)
    with pytest.raises(AttributeError):
        study.status = "running"  # type: ignore[misc]


def test_unreachable_database_raises_unavailable() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1")
    with pytest.raises(DatabaseUnavailable, match="database unavailable"):
        Store(engine).get_study("any")
    engine.dispose()


def test_locked_sqlite_database_raises_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    upgrade(f"sqlite:///{path}")
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
        with pytest.raises(DatabaseUnavailable, match="locked"):
            Store(engine).create_api_key("alice")
    finally:
        blocker.close()
        engine.dispose()
