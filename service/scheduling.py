"""The scheduler, which creates the studies of due schedules, and a schedule's history.

One `Scheduler.tick(now)` coalesces every due time missed since the last tick (the service
was down) into one run for the latest of them, and claims it through
`Store.claim_schedule_run`, so two service processes on one database never record, nor create
a study for, the same run twice. Due times: `service.cron`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from service.cron import check_timezone, latest_due, next_due
from service.db import DatabaseUnavailable
from service.models import utcnow
from service.settings import Settings
from service.store import (
    IdempotencyKeyReused,
    ScheduleRecord,
    ScheduleRunRecord,
    Store,
    StudyRecord,
    TooManyStudies,
)
from service.studies import submit, validate_spec
from workers.states import ACTIVE_STUDY_STATUSES

log = logging.getLogger(__name__)

MAX_SCHEDULE_NAME = 80  # the study name adds " YYYY-MM-DD HH:MM"; a spec name holds 100


# --------------------------------------------------------------------------------------
# the scheduler


def study_name(schedule: ScheduleRecord, due_at: datetime) -> str:
    """The name of the study a run creates: the schedule's name and the local due time."""
    local = due_at.astimezone(check_timezone(schedule.timezone))
    return f"{schedule.name} {local:%Y-%m-%d %H:%M}"


def idempotency_key(run: ScheduleRunRecord) -> str:
    """The key that makes creating a run's study idempotent across processes."""
    return f"schedule-{run.schedule_id}-{run.due_at.astimezone(ZoneInfo('UTC')):%Y%m%dT%H%M%SZ}"


class Scheduler:
    """Creates the studies of due schedules: `tick(now)` once, or every `interval_s` from
    `start()` to `stop()` with `clock` (UTC now)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        interval_s: float = 5.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick(self.clock())
            except DatabaseUnavailable as error:
                log.warning("scheduler: %s; retrying", error)
            except Exception:
                log.exception("scheduler tick failed; retrying")
            self._stop.wait(self.interval_s)

    def tick(self, now: datetime) -> list[ScheduleRunRecord]:
        """Record one run per due schedule (creating its study or skipping); the runs this
        call recorded."""
        for pending in self.store.unattached_runs():
            self._create_study(pending)
        claimed = []
        for schedule in self.store.due_schedules(now):
            due_at = latest_due(schedule.cron, schedule.timezone, schedule.next_run_at, now)
            reason = self._skip_reason(schedule, due_at)
            run = self.store.claim_schedule_run(
                schedule,
                due_at,
                next_due(schedule.cron, schedule.timezone, now),
                state="skipped" if reason else "created",
                reason=reason,
            )
            if run is None:
                continue  # another process claimed it, or it was disabled or deleted
            if run.state == "created":
                run = self._create_study(run)
            log.info("schedule %s: run for %s %s", schedule.id, due_at, run.state)
            claimed.append(run)
        return claimed

    def _skip_reason(self, schedule: ScheduleRecord, due_at: datetime) -> str | None:
        previous = self.store.latest_created_run(schedule.id)
        if previous is not None and previous.study_id is not None:
            study = self.store.get_study(previous.study_id)
            if study is not None and study.status in ACTIVE_STUDY_STATUSES:
                return f"the previous run's study {study.id} is still {study.status}"
        try:
            validate_spec({**schedule.spec, "name": study_name(schedule, due_at)}, self.settings)
        except ValidationError as error:
            return f"the template spec is no longer valid under the server's limits: {error}"
        return None

    def _create_study(self, run: ScheduleRunRecord) -> ScheduleRunRecord:
        """Create the run's study; the run with it, or skipped where the owner has
        MAX_QUEUED_STUDIES_PER_OWNER queued studies (schedules are held to it too)."""
        schedule = self.store.get_schedule(run.schedule_id)
        if schedule is None:
            return run
        name = study_name(schedule, run.due_at)
        spec = {**schedule.spec, "name": name}
        key = idempotency_key(run)
        limit = self.settings.max_queued_studies_per_owner
        try:
            try:
                study, _ = submit(self.store, self.settings, schedule.owner_id, spec, key)
            except ValidationError:
                # The limits changed since this run was claimed: the template as it was accepted.
                study, _ = self.store.create_study(
                    schedule.owner_id, spec, name, key, max_queued=limit
                )
        except TooManyStudies as error:
            reason = f"no study was created: {error}"
            self.store.skip_run(run.id, reason)
            return replace(run, state="skipped", reason=reason)
        except IdempotencyKeyReused as error:  # the template changed since a first attempt
            study = error.study
        self.store.attach_run_study(run.id, study.id)
        return replace(run, study_id=study.id)


# --------------------------------------------------------------------------------------
# history


def history(
    store: Store,
    schedule: ScheduleRecord,
    limit: int | None = None,
    *,
    to_latest_success: bool = False,
) -> list[dict[str, Any]]:
    """The schedule's runs, newest first, JSON-ready: due time, state, the study and its
    headline figures, and the comparison with the previous successful run.

    `limit`: the newest runs only; `to_latest_success`: the runs down to the newest
    successful one (what `latest_comparison` needs).
    """
    from service.report_cache import study_report
    from service.reports.regressions import compare_runs, headline_figures  # late: numpy, scipy

    runs = store.schedule_runs(schedule.id)
    studies = store.studies_by_id({r.study_id for r in runs if r.study_id is not None})
    # Reports of the shown runs and of the successful run before the oldest one shown.
    shown = runs if limit is None else runs[:limit]
    if to_latest_success:
        newest = next((i for i, r in enumerate(runs) if _succeeded(studies, r)), len(runs))
        shown = shown[: newest + 1]
    needed = {r.study_id for r in shown if r.study_id in studies}
    older = [r for r in runs[len(shown) :] if _succeeded(studies, r)]
    if older:
        needed.add(cast(str, older[0].study_id))
    reports: dict[str, dict[str, Any]] = {}
    for study_id in needed:
        report = study_report(store, study_id)
        if report is not None:
            reports[study_id] = report
    entries = []
    for index, run in enumerate(runs[: len(shown)]):
        study = studies.get(run.study_id) if run.study_id else None
        report = reports.get(study.id) if study else None
        previous = next((r for r in runs[index + 1 :] if _succeeded(studies, r)), None)
        comparison = None
        if report is not None and study is not None and study.status == "succeeded":
            previous_report = reports.get(cast(str, previous.study_id)) if previous else None
            if previous is not None and previous_report is not None:
                arms = compare_runs(
                    previous_report,
                    report,
                    points_threshold=schedule.points_threshold,
                    iterations_fraction=schedule.iterations_fraction,
                )
                comparison = {
                    "previous_study_id": previous.study_id,
                    "previous_due_at": previous.due_at.isoformat(),
                    "regression": any(a["regression"] for a in arms),
                    "arms": arms,
                }
        entries.append(
            {
                "due_at": run.due_at.isoformat(),
                "state": run.state,
                "reason": run.reason,
                "study_id": run.study_id,
                "study_status": study.status if study else None,
                "arms": headline_figures(report) if report is not None else [],
                "comparison": comparison,
            }
        )
    return entries


def _succeeded(studies: Mapping[str, StudyRecord], run: ScheduleRunRecord) -> bool:
    study = studies.get(run.study_id) if run.study_id else None
    return study is not None and study.status == "succeeded"
