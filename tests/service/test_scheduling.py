"""The scheduler with a controllable clock: coalescing, skipping, claims by two processes, and
a schedule's history with its regressions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.reports.regressions import (
    DEFAULT_ITERATIONS_FRACTION,
    DEFAULT_POINTS_THRESHOLD,
    latest_comparison,
)
from service.scheduling import Scheduler, history
from service.settings import Settings
from service.store import ScheduleRecord, Store, TooManySchedules
from tests.factories import study_spec
from workers.events import EvalPoint, PlannedTrial

BERLIN = "Europe/Berlin"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # schedules are created at this time


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


@pytest.fixture
def owner_id(store: Store) -> int:
    record, _ = store.create_api_key("alice")
    return record.owner.id


@pytest.fixture
def scheduler(store: Store, tmp_path: Path) -> Scheduler:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'unused.db'}")
    return Scheduler(store, settings, clock=lambda: START)


def nightly(store: Store, owner_id: int, **changes: Any) -> ScheduleRecord:
    """A schedule at 02:00 Berlin time, created at START (first due 2026-03-02 01:00 UTC)."""
    values: dict[str, Any] = {
        "name": "nightly",
        "cron": "0 2 * * *",
        "timezone": BERLIN,
        "points_threshold": DEFAULT_POINTS_THRESHOLD,
        "iterations_fraction": DEFAULT_ITERATIONS_FRACTION,
    }
    values.update(changes)
    return store.create_schedule(owner_id, spec=study_spec(), now=START, **values)


def finish(store: Store, study_id: str, finals: Mapping[str, Sequence[float]]) -> None:
    """Run a study to success: per arm, one trial per final accuracy, learning linearly."""
    assert store.transition(study_id, "running", expected={"queued"})
    planned = [
        PlannedTrial(f"{arm}-s{seed}", arm, seed, 60)
        for arm, accuracies in finals.items()
        for seed in range(len(accuracies))
    ]
    store.record_plan(study_id, 10, planned)
    store.record_arms(
        study_id,
        {
            arm: {
                "optimizer": {"name": "sgd", "options": {}},
                "policy": {"name": "fixed", "params": {"lr": 0.1}},
                "auto": [],
                "iterations": 60,
            }
            for arm in finals
        },
    )
    for trial in planned:
        final = finals[trial.arm][trial.seed]
        store.upsert_trial_started(study_id, trial.trial_id, trial.arm, trial.seed, 60)
        points = [
            EvalPoint(i, i / 10, 0.1, 1.0, final * i / 60, 1.0, i / 100) for i in range(0, 61, 10)
        ]
        store.record_eval_points(study_id, trial.trial_id, points)
        store.record_trial_end(study_id, trial.trial_id, "completed", 60, 0.6)
    assert store.transition(study_id, "succeeded", expected={"running"})


# ---- the scheduler ----------------------------------------------------------------------


def test_a_due_schedule_creates_one_study_named_after_it(
    scheduler: Scheduler, store: Store, owner_id: int
) -> None:
    schedule = nightly(store, owner_id)
    assert schedule.next_run_at == utc(2026, 3, 2, 1)
    assert scheduler.tick(utc(2026, 3, 2, 0, 59)) == []
    (run,) = scheduler.tick(utc(2026, 3, 2, 1, 0, 3))
    assert (run.state, run.due_at) == ("created", utc(2026, 3, 2, 1))
    study = store.get_study(run.study_id or "")
    assert study is not None and study.owner_id == owner_id
    assert study.name == study.spec["name"] == "nightly 2026-03-02 02:00"  # local time
    assert [a["name"] for a in study.spec["arms"]] == ["fixed", "triangular"]
    assert study.spec["seeds"] == [0, 1] and study.status == "queued"  # validated, expanded
    after = store.get_schedule(schedule.id)
    assert after is not None and after.next_run_at == utc(2026, 3, 3, 1)
    assert after.last_run_at == utc(2026, 3, 2, 1)
    assert scheduler.tick(utc(2026, 3, 2, 1, 0, 8)) == []  # the next tick: nothing new


def test_missed_runs_are_coalesced_into_one_for_the_latest(
    scheduler: Scheduler, store: Store, owner_id: int
) -> None:
    schedule = nightly(store, owner_id)
    # The service was down from before the first due time until 2026-03-06 09:00 UTC.
    (run,) = scheduler.tick(utc(2026, 3, 6, 9))
    assert run.due_at == utc(2026, 3, 6, 1)
    assert len(store.schedule_runs(schedule.id)) == 1
    assert store.list_studies()[1] == 1
    after = store.get_schedule(schedule.id)
    assert after is not None and after.next_run_at == utc(2026, 3, 7, 1)


def test_a_run_skips_while_the_previous_study_is_queued_or_running(
    scheduler: Scheduler, store: Store, owner_id: int
) -> None:
    schedule = nightly(store, owner_id)
    (first,) = scheduler.tick(utc(2026, 3, 2, 1))
    (queued,) = scheduler.tick(utc(2026, 3, 3, 1))
    assert queued.state == "skipped" and queued.study_id is None
    assert queued.reason == f"the previous run's study {first.study_id} is still queued"
    assert store.transition(first.study_id or "", "running", expected={"queued"})
    (running,) = scheduler.tick(utc(2026, 3, 4, 1))
    assert running.state == "skipped" and "still running" in (running.reason or "")
    assert store.transition(first.study_id or "", "failed", expected={"running"})
    (created,) = scheduler.tick(utc(2026, 3, 5, 1))
    assert created.state == "created" and created.study_id not in (None, first.study_id)
    states = [r.state for r in store.schedule_runs(schedule.id)]
    assert states == ["created", "skipped", "skipped", "created"]  # newest first
    assert store.list_studies()[1] == 2


def test_a_template_the_limits_no_longer_allow_skips(
    store: Store, owner_id: int, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None, database_url=f"sqlite:///{tmp_path / 'unused.db'}", max_seeds=1
    )
    nightly(store, owner_id)
    (run,) = Scheduler(store, settings).tick(utc(2026, 3, 2, 1))
    assert run.state == "skipped" and "template spec is no longer valid" in (run.reason or "")
    assert store.list_studies()[1] == 0


def test_a_schedule_is_held_to_the_owners_queued_limit(
    store: Store, owner_id: int, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        max_queued_studies_per_owner=2,
    )
    for name in ("a", "b"):
        store.create_study(owner_id, study_spec(), name)
    schedule = nightly(store, owner_id)
    (run,) = Scheduler(store, settings).tick(utc(2026, 3, 2, 1))
    assert run.state == "skipped" and run.study_id is None
    assert "MAX_QUEUED_STUDIES_PER_OWNER=2" in (run.reason or "")
    assert [(r.state, r.reason) for r in store.schedule_runs(schedule.id)] == [
        ("skipped", run.reason)
    ]
    assert store.list_studies()[1] == 2


def test_an_owner_has_at_most_max_schedules(store: Store, owner_id: int) -> None:
    for i in range(3):
        nightly(store, owner_id, name=f"n{i}", max_schedules=3)
    with pytest.raises(TooManySchedules, match=r"you have 3 schedules.*=3\)"):
        nightly(store, owner_id, name="n3", max_schedules=3)
    record, _ = store.create_api_key("bob")
    nightly(store, record.owner.id, name="n3", max_schedules=3)  # his count is his own


def test_a_deleted_study_of_a_run_is_not_created_again(
    scheduler: Scheduler, store: Store, owner_id: int
) -> None:
    schedule = nightly(store, owner_id)
    (run,) = scheduler.tick(utc(2026, 3, 2, 1))
    assert store.transition(run.study_id or "", "cancelled", expected={"queued"})
    assert store.delete_study(run.study_id or "")
    assert scheduler.tick(utc(2026, 3, 2, 2)) == []  # no run due, none re-created
    assert store.list_studies()[1] == 0
    (kept,) = store.schedule_runs(schedule.id)
    assert (kept.state, kept.study_id) == ("skipped", None)
    assert kept.reason == f"its study {run.study_id} was deleted"


def test_disabled_schedule_creates_nothing_and_resumes_without_catching_up(
    scheduler: Scheduler, store: Store, owner_id: int
) -> None:
    schedule = nightly(store, owner_id)
    store.update_schedule(schedule.id, {"enabled": False}, now=START)
    assert scheduler.tick(utc(2026, 3, 10, 1)) == []
    resumed = store.update_schedule(schedule.id, {"enabled": True}, now=utc(2026, 3, 10, 12))
    assert resumed.next_run_at == utc(2026, 3, 11, 1)
    assert scheduler.tick(utc(2026, 3, 10, 12)) == []
    (run,) = scheduler.tick(utc(2026, 3, 11, 1))
    assert run.due_at == utc(2026, 3, 11, 1) and store.list_studies()[1] == 1


def test_deleting_a_schedule_keeps_its_studies_and_creates_nothing_more(
    scheduler: Scheduler, store: Store, owner_id: int
) -> None:
    schedule = nightly(store, owner_id)
    (run,) = scheduler.tick(utc(2026, 3, 2, 1))
    assert store.delete_schedule(schedule.id)
    assert store.get_schedule(schedule.id) is None and store.schedule_runs(schedule.id) == []
    assert store.get_study(run.study_id or "") is not None
    assert scheduler.tick(utc(2026, 3, 9, 1)) == []
    assert store.list_studies()[1] == 1


def test_a_claimed_run_without_its_study_gets_it_at_the_next_tick(
    scheduler: Scheduler, store: Store, owner_id: int
) -> None:
    schedule = nightly(store, owner_id)
    # A process claimed the run and stopped before creating the study.
    claimed = store.claim_schedule_run(schedule, schedule.next_run_at, utc(2026, 3, 3, 1))
    assert claimed is not None and claimed.study_id is None
    assert scheduler.tick(utc(2026, 3, 2, 6)) == []
    scheduler.tick(utc(2026, 3, 2, 7))
    (run,) = store.schedule_runs(schedule.id)
    assert run.study_id is not None and store.list_studies()[1] == 1


CLAIMER = """
import sys, time
from datetime import datetime
from pathlib import Path
from service.db import make_engine
from service.scheduling import Scheduler
from service.settings import Settings
from service.store import Store
import workers.spec  # imported before the race, as a running service has it

url, folder, name, now = sys.argv[1:]
engine = make_engine(url)
settings = Settings(_env_file=None, database_url=url)
scheduler = Scheduler(Store(engine), settings)
Path(folder, name + ".ready").touch()
while not Path(folder, "go").exists():
    time.sleep(0.001)
runs = scheduler.tick(datetime.fromisoformat(now))
print(len(runs))
"""


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_processes_never_create_the_same_run_twice(
    db_url: str, store: Store, owner_id: int, tmp_path: Path
) -> None:
    count = 5
    ids = [nightly(store, owner_id, name=f"nightly {i}").id for i in range(count)]
    now = utc(2026, 3, 2, 1, 0, 1).isoformat()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CLAIMER), db_url, str(tmp_path), name, now],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"{n}.ready").exists() for n in "ab"):
        assert time.monotonic() < deadline, "the claimers did not start"
        assert all(p.poll() is None for p in processes), "a claimer died"
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    assert sum(int(out) for out in outputs) == count  # every run recorded by one of them
    for schedule_id in ids:
        (run,) = store.schedule_runs(schedule_id)
        assert run.state == "created" and run.study_id is not None
    assert store.list_studies()[1] == count


# ---- history ----------------------------------------------------------------------------


def test_history_compares_each_run_with_the_previous_successful_one(
    scheduler: Scheduler, store: Store, owner_id: int
) -> None:
    schedule = nightly(store, owner_id)
    nights = [
        {"fixed": [0.80, 0.81], "triangular": [0.90, 0.91]},
        None,  # this night's study fails
        {"fixed": [0.80, 0.81], "triangular": [0.90, 0.905]},
        {"fixed": [0.80, 0.81], "triangular": [0.84, 0.85]},  # triangular regressed
    ]
    for day, finals in enumerate(nights, start=2):
        (run,) = scheduler.tick(utc(2026, 3, day, 1))
        if finals is None:
            store.transition(run.study_id or "", "failed", expected={"queued"}, error="boom")
        else:
            finish(store, run.study_id or "", finals)
    entries = history(store, schedule)
    assert [e["study_status"] for e in entries] == ["succeeded", "succeeded", "failed", "succeeded"]
    newest, middle, failed, oldest = entries
    assert oldest["comparison"] is None and failed["comparison"] is None
    assert middle["comparison"]["previous_study_id"] == oldest["study_id"]  # skips the failure
    assert middle["comparison"]["regression"] is False
    assert newest["comparison"]["regression"] is True
    flagged = [a["arm"] for a in newest["comparison"]["arms"] if a["regression"]]
    assert flagged == ["triangular"]
    figures = {a["arm"]: a for a in newest["arms"]}
    assert figures["triangular"]["final_accuracy"] == pytest.approx(0.845)
    assert figures["fixed"]["speedup"] == pytest.approx(1.0)
    latest = latest_comparison(history(store, schedule, to_latest_success=True))
    assert latest is not None and latest["study_id"] == newest["study_id"] and latest["regression"]
    # A shorter page still compares its oldest run with the run before the page.
    assert history(store, schedule, limit=2)[1]["comparison"] == middle["comparison"]
