"""Schedules with a controllable clock: due times across DST, coalescing, skipping, claims by
two processes, and regression detection."""

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
from sqlalchemy import Engine

from service.db import make_engine
from service.reports.statistics import mean_ci
from service.scheduling import (
    Scheduler,
    ScheduleRecord,
    ScheduleStore,
    check_cron,
    check_timezone,
    compare_runs,
    history,
    latest_comparison,
    next_due,
)
from service.settings import Settings
from service.store import Store
from workers.events import EvalPoint, PlannedTrial

SPEC: dict[str, Any] = {
    "name": "template",
    "dataset": "digits",
    "model": {"name": "mlp", "hidden": "32"},
    "batch_size": 64,
    "iterations": 60,
    "eval_every": 10,
    "seeds": 2,
    "arms": [
        {"name": "fixed", "optimizer": "sgd", "policy": {"name": "fixed", "lr": 0.1}},
        {
            "name": "triangular",
            "optimizer": "sgd",
            "policy": {"name": "triangular", "base_lr": 0.03, "max_lr": 0.1, "step_size": 20},
        },
    ],
}
BERLIN = "Europe/Berlin"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # schedules are created at this time


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


@pytest.fixture
def schedules(engine: Engine) -> ScheduleStore:
    return ScheduleStore(engine)


@pytest.fixture
def owner_id(store: Store) -> int:
    record, _ = store.create_api_key("alice")
    return record.owner.id


@pytest.fixture
def scheduler(store: Store, schedules: ScheduleStore, tmp_path: Path) -> Scheduler:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'unused.db'}")
    return Scheduler(store, schedules, settings, clock=lambda: START)


def nightly(schedules: ScheduleStore, owner_id: int, **changes: Any) -> ScheduleRecord:
    """A schedule at 02:00 Berlin time, created at START (first due 2026-03-02 01:00 UTC)."""
    values: dict[str, Any] = {"name": "nightly", "cron": "0 2 * * *", "timezone": BERLIN}
    values.update(changes)
    return schedules.create(owner_id, spec=SPEC, now=START, **values)


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


# ---- due times --------------------------------------------------------------------------


def test_nightly_rule_in_berlin_across_spring_forward() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:00 does not exist that night.
    assert next_due("0 2 * * *", BERLIN, utc(2026, 3, 28, 1)) == utc(2026, 3, 29, 1)  # 03:00 CEST
    assert next_due("0 2 * * *", BERLIN, utc(2026, 3, 29, 1)) == utc(2026, 3, 30, 0)  # 02:00 CEST
    assert next_due("30 2 * * *", BERLIN, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert next_due("0 1 * * *", BERLIN, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 0)  # 01:00 CET


def test_nightly_rule_in_berlin_fires_once_on_fall_back_night() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:00 happens twice.
    first = next_due("0 2 * * *", BERLIN, utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0)  # 02:00 CEST, the first occurrence
    assert next_due("0 2 * * *", BERLIN, first) == utc(2026, 10, 26, 1)  # 02:00 CET next night
    half_hourly, t = [], utc(2026, 10, 24, 23, 15)
    while (t := next_due("*/30 * * * *", BERLIN, t)) < utc(2026, 10, 25, 2, 30):
        half_hourly.append(t.astimezone(check_timezone(BERLIN)).strftime("%H:%M"))
    # Each wall-clock time once: the repeated 02:00 and 02:30 (CET) do not fire again.
    assert half_hourly == ["01:30", "02:00", "02:30", "03:00"]


def test_due_times_follow_the_local_clock_not_utc() -> None:
    noon = [next_due("0 12 * * *", BERLIN, utc(2026, 3, d, 13)) for d in (26, 27, 28)]
    assert [t.hour for t in noon] == [11, 11, 10]  # 12:00 CET, then 12:00 CEST
    assert next_due("0 2 * * *", "UTC", utc(2026, 3, 1, 2)) == utc(2026, 3, 2, 2)  # strictly after


@pytest.mark.parametrize("cron", ["0 2 * *", "61 2 * * *", "0 0 0 * * *", "0 0 31 2 *", "nightly"])
def test_invalid_cron_rules_are_refused_naming_the_field(cron: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        check_cron(cron)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "", "Europe/"])
def test_invalid_time_zones_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ValueError, match="timezone"):
        check_timezone(name)


# ---- the scheduler ----------------------------------------------------------------------


def test_a_due_schedule_creates_one_study_named_after_it(
    scheduler: Scheduler, schedules: ScheduleStore, store: Store, owner_id: int
) -> None:
    schedule = nightly(schedules, owner_id)
    assert schedule.next_run_at == utc(2026, 3, 2, 1)
    assert scheduler.tick(utc(2026, 3, 2, 0, 59)) == []
    (run,) = scheduler.tick(utc(2026, 3, 2, 1, 0, 3))
    assert (run.state, run.due_at) == ("created", utc(2026, 3, 2, 1))
    study = store.get_study(run.study_id or "")
    assert study is not None and study.owner_id == owner_id
    assert study.name == study.spec["name"] == "nightly 2026-03-02 02:00"  # local time
    assert [a["name"] for a in study.spec["arms"]] == ["fixed", "triangular"]
    assert study.spec["seeds"] == [0, 1] and study.status == "queued"  # validated, expanded
    after = schedules.get(schedule.id)
    assert after is not None and after.next_run_at == utc(2026, 3, 3, 1)
    assert after.last_run_at == utc(2026, 3, 2, 1)
    assert scheduler.tick(utc(2026, 3, 2, 1, 0, 8)) == []  # the next tick: nothing new


def test_missed_runs_are_coalesced_into_one_for_the_latest(
    scheduler: Scheduler, schedules: ScheduleStore, store: Store, owner_id: int
) -> None:
    schedule = nightly(schedules, owner_id)
    # The service was down from before the first due time until 2026-03-06 09:00 UTC.
    (run,) = scheduler.tick(utc(2026, 3, 6, 9))
    assert run.due_at == utc(2026, 3, 6, 1)
    assert len(schedules.runs(schedule.id)) == 1
    assert store.list_studies()[1] == 1
    after = schedules.get(schedule.id)
    assert after is not None and after.next_run_at == utc(2026, 3, 7, 1)


def test_a_run_skips_while_the_previous_study_is_queued_or_running(
    scheduler: Scheduler, schedules: ScheduleStore, store: Store, owner_id: int
) -> None:
    schedule = nightly(schedules, owner_id)
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
    states = [r.state for r in schedules.runs(schedule.id)]
    assert states == ["created", "skipped", "skipped", "created"]  # newest first
    assert store.list_studies()[1] == 2


def test_a_template_the_limits_no_longer_allow_skips(
    store: Store, schedules: ScheduleStore, owner_id: int, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None, database_url=f"sqlite:///{tmp_path / 'unused.db'}", max_seeds=1
    )
    nightly(schedules, owner_id)
    (run,) = Scheduler(store, schedules, settings).tick(utc(2026, 3, 2, 1))
    assert run.state == "skipped" and "template spec is no longer valid" in (run.reason or "")
    assert store.list_studies()[1] == 0


def test_disabled_schedule_creates_nothing_and_resumes_without_catching_up(
    scheduler: Scheduler, schedules: ScheduleStore, store: Store, owner_id: int
) -> None:
    schedule = nightly(schedules, owner_id)
    schedules.update(schedule.id, {"enabled": False}, now=START)
    assert scheduler.tick(utc(2026, 3, 10, 1)) == []
    resumed = schedules.update(schedule.id, {"enabled": True}, now=utc(2026, 3, 10, 12))
    assert resumed.next_run_at == utc(2026, 3, 11, 1)
    assert scheduler.tick(utc(2026, 3, 10, 12)) == []
    (run,) = scheduler.tick(utc(2026, 3, 11, 1))
    assert run.due_at == utc(2026, 3, 11, 1) and store.list_studies()[1] == 1


def test_deleting_a_schedule_keeps_its_studies_and_creates_nothing_more(
    scheduler: Scheduler, schedules: ScheduleStore, store: Store, owner_id: int
) -> None:
    schedule = nightly(schedules, owner_id)
    (run,) = scheduler.tick(utc(2026, 3, 2, 1))
    assert schedules.delete(schedule.id)
    assert schedules.get(schedule.id) is None and schedules.runs(schedule.id) == []
    assert store.get_study(run.study_id or "") is not None
    assert scheduler.tick(utc(2026, 3, 9, 1)) == []
    assert store.list_studies()[1] == 1


def test_a_stale_or_repeated_claim_records_nothing(schedules: ScheduleStore, owner_id: int) -> None:
    schedule = nightly(schedules, owner_id)
    due, following = schedule.next_run_at, utc(2026, 3, 3, 1)
    assert schedules.claim_run(schedule, due, following) is not None
    # A second process read the schedule before the claim: its conditional UPDATE misses.
    assert schedules.claim_run(schedule, due, following) is None
    # One that read it after, for the same due time: the unique constraint refuses the run,
    # and the rolled back UPDATE leaves next_run_at as it was.
    fresh = schedules.get(schedule.id)
    assert fresh is not None
    assert schedules.claim_run(fresh, due, utc(2026, 3, 4, 1)) is None
    assert (schedules.get(schedule.id) or fresh).next_run_at == following
    assert len(schedules.runs(schedule.id)) == 1


def test_a_claimed_run_without_its_study_gets_it_at_the_next_tick(
    scheduler: Scheduler, schedules: ScheduleStore, store: Store, owner_id: int
) -> None:
    schedule = nightly(schedules, owner_id)
    # A process claimed the run and stopped before creating the study.
    claimed = schedules.claim_run(schedule, schedule.next_run_at, utc(2026, 3, 3, 1))
    assert claimed is not None and claimed.study_id is None
    assert scheduler.tick(utc(2026, 3, 2, 6)) == []
    scheduler.tick(utc(2026, 3, 2, 7))
    (run,) = schedules.runs(schedule.id)
    assert run.study_id is not None and store.list_studies()[1] == 1


CLAIMER = """
import sys, time
from datetime import datetime
from pathlib import Path
from service.db import make_engine
from service.scheduling import Scheduler, ScheduleStore
from service.settings import Settings
from service.store import Store
import workers.spec  # imported before the race, as a running service has it

url, folder, name, now = sys.argv[1:]
engine = make_engine(url)
settings = Settings(_env_file=None, database_url=url)
scheduler = Scheduler(Store(engine), ScheduleStore(engine), settings)
Path(folder, name + ".ready").touch()
while not Path(folder, "go").exists():
    time.sleep(0.001)
runs = scheduler.tick(datetime.fromisoformat(now))
print(len(runs))
"""


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_processes_never_create_the_same_run_twice(
    db_url: str, schedules: ScheduleStore, store: Store, owner_id: int, tmp_path: Path
) -> None:
    count = 5
    ids = [nightly(schedules, owner_id, name=f"nightly {i}").id for i in range(count)]
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
        (run,) = schedules.runs(schedule_id)
        assert run.state == "created" and run.study_id is not None
    assert store.list_studies()[1] == count


# ---- regressions ------------------------------------------------------------------------


def report(arms: Mapping[str, tuple[Sequence[float], float | None]]) -> dict[str, Any]:
    """A hand-made report: per arm, its seeds' final accuracies and iterations to target."""
    rows = []
    for name, (finals, iterations) in arms.items():
        mean, low, high = mean_ci(finals)
        rows.append(
            {
                "arm": name,
                "final_accuracy": {"mean": mean, "ci_low": low, "ci_high": high, "n": len(finals)},
                "iterations_to_target": {"mean": iterations},
                "speedup": None,
            }
        )
    return {"arms": rows}


def by_arm(deltas: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["arm"]: d for d in deltas}


def test_final_accuracy_below_the_previous_interval_is_a_regression() -> None:
    before = report({"fixed": ([0.90, 0.91, 0.92], 100.0), "clr": ([0.93, 0.94, 0.95], 50.0)})
    after = report({"fixed": ([0.905, 0.91, 0.915], 100.0), "clr": ([0.90, 0.91, 0.92], 50.0)})
    deltas = by_arm(compare_runs(before, after))
    assert not deltas["fixed"]["regression"] and deltas["fixed"]["reasons"] == []
    assert deltas["clr"]["regression"]
    assert "below the previous run's 95% interval" in deltas["clr"]["reasons"][0]
    assert deltas["clr"]["final_accuracy_delta_points"] == pytest.approx(-3.0)


def test_with_one_seed_the_points_threshold_decides() -> None:
    before, after = report({"fixed": ([0.90], None)}), report({"fixed": ([0.87], None)})
    (delta,) = compare_runs(before, after)
    assert delta["regression"] and "fell 3.0 points" in delta["reasons"][0]
    (delta,) = compare_runs(before, after, points_threshold=5.0)
    assert not delta["regression"]


def test_more_iterations_to_target_or_none_at_all_is_a_regression() -> None:
    before = report({"a": ([0.9, 0.9], 1000.0), "b": ([0.9, 0.9], 1000.0), "c": ([0.9], 1000.0)})
    after = report({"a": ([0.9, 0.9], 1200.0), "b": ([0.9, 0.9], 1300.0), "c": ([0.9], None)})
    deltas = by_arm(compare_runs(before, after))
    assert not deltas["a"]["regression"] and deltas["a"]["iterations_change"] == pytest.approx(0.2)
    assert deltas["b"]["regression"] and "rose 30%" in deltas["b"]["reasons"][0]
    assert deltas["c"]["reasons"] == ["no longer reaches the target accuracy"]
    assert by_arm(compare_runs(before, after, iterations_fraction=0.5))["b"]["regression"] is False


def test_a_new_arm_has_nothing_to_compare_with() -> None:
    (delta,) = compare_runs(report({}), report({"new": ([0.5], 10.0)}))
    assert delta["regression"] is False and delta["previous_final_accuracy"] is None


def test_history_compares_each_run_with_the_previous_successful_one(
    scheduler: Scheduler, schedules: ScheduleStore, store: Store, owner_id: int
) -> None:
    schedule = nightly(schedules, owner_id)
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
    entries = history(store, schedules, schedule)
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
    latest = latest_comparison(history(store, schedules, schedule, to_latest_success=True))
    assert latest is not None and latest["study_id"] == newest["study_id"] and latest["regression"]
    # A shorter page still compares its oldest run with the run before the page.
    assert history(store, schedules, schedule, limit=2)[1]["comparison"] == middle["comparison"]


def test_schedules_survive_a_restart(schedules: ScheduleStore, owner_id: int, db_url: str) -> None:
    created = nightly(schedules, owner_id)
    restarted = make_engine(db_url)  # a new process's engine: nothing cached
    try:
        assert ScheduleStore(restarted).list_schedules() == [created]
    finally:
        restarted.dispose()
