"""Schedules: cron rules that create studies, their runs, and regression alerts.

Due times are cron rules evaluated in the schedule's time zone (croniter over zoneinfo):
- a local time skipped by a spring-forward change fires at the end of the gap (`0 2 * * *`
  in Europe/Berlin on the last Sunday of March fires at 03:00 CEST), as croniter computes;
- a local time repeated by a fall-back change fires once, at its first occurrence.

One `Scheduler.tick(now)` coalesces every due time missed since the last tick (the service
was down) into one run for the latest of them, and claims it with a conditional UPDATE of
`next_run_at` plus an INSERT that the unique (schedule, due time) constraint guards, so two
service processes on one database never record, nor create a study for, the same run twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from html import escape
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from pydantic import ValidationError
from sqlalchemy import CursorResult, Engine, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import DatabaseUnavailable, session_factory, session_scope
from service.models import Schedule, ScheduleRun, utcnow
from service.settings import Settings
from service.store import Store, StudyRecord

log = logging.getLogger(__name__)

CRON_FIELDS = 5
ACTIVE_STATUSES = frozenset({"queued", "running"})
DEFAULT_POINTS_THRESHOLD = 2.0  # percentage points of final accuracy, for one-seed runs
DEFAULT_ITERATIONS_FRACTION = 0.25  # rise of iterations to target that counts as a regression
MAX_SCHEDULE_NAME = 80  # the study name adds " YYYY-MM-DD HH:MM"; a spec name holds 100
SCHEDULE_FIELDS = (
    "name", "cron", "timezone", "spec", "enabled", "points_threshold", "iterations_fraction",
)  # fmt: skip


# --------------------------------------------------------------------------------------
# due times


def check_cron(cron: str) -> str:
    """The rule if it is a valid 5-field cron rule that matches some date; else ValueError."""
    if len(cron.split()) != CRON_FIELDS or not croniter.is_valid(cron):
        raise ValueError(
            f"cron {cron!r} is not a 5-field cron rule (minute hour day-of-month month "
            "day-of-week, e.g. '0 2 * * *')"
        )
    try:
        croniter(cron, utcnow()).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron {cron!r} never matches a date (e.g. '0 0 31 2 *')") from None
    return cron


def check_timezone(name: str) -> ZoneInfo:
    """The time zone of an IANA name (e.g. 'Europe/Berlin', 'UTC'); else ValueError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone {name!r} is not an IANA time zone name (e.g. 'Europe/Berlin', 'UTC')"
        ) from None


def _repeated(local: datetime) -> bool:
    """Whether `local` is the second occurrence of a wall-clock time (a fall-back hour)."""
    first = local.replace(fold=0)
    return first.utcoffset() != local.utcoffset() and local.replace(fold=1) == local


def next_due(cron: str, timezone: str, after: datetime) -> datetime:
    """The first due time strictly after `after` (aware), in UTC; see the module docstring."""
    zone = check_timezone(timezone)
    times = croniter(cron, after.astimezone(zone))
    while True:
        due: datetime = times.get_next(datetime)
        if due > after and not _repeated(due):
            return due.astimezone(ZoneInfo("UTC"))


def latest_due(cron: str, timezone: str, first: datetime, now: datetime) -> datetime:
    """The latest due time in [first, now], where `first` is a due time at or before `now`."""
    due = first
    while (following := next_due(cron, timezone, due)) <= now:
        due = following
    return due


# --------------------------------------------------------------------------------------
# the store


@dataclass(frozen=True)
class ScheduleRecord:
    id: int
    owner_id: int
    name: str
    cron: str
    timezone: str
    spec: dict[str, Any]
    enabled: bool
    points_threshold: float
    iterations_fraction: float
    created_at: datetime
    next_run_at: datetime
    last_run_at: datetime | None


@dataclass(frozen=True)
class ScheduleRunRecord:
    id: int
    schedule_id: int
    due_at: datetime
    study_id: str | None
    state: str
    reason: str | None
    created_at: datetime


def _record(cls: type[Any], row: Any) -> Any:
    return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


class DuplicateScheduleName(ValueError):
    """The owner has a schedule of that name already."""


def _taken(name: Any) -> str:
    return f"name {name!r}: you have a schedule of that name already"


class ScheduleStore:
    """Schedules and their runs, through frozen records."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)

    def _session(self) -> AbstractContextManager[Session]:
        return session_scope(self._sessions)

    def create(
        self,
        owner_id: int,
        name: str,
        cron: str,
        timezone: str,
        spec: dict[str, Any],
        *,
        now: datetime,
        enabled: bool = True,
        points_threshold: float = DEFAULT_POINTS_THRESHOLD,
        iterations_fraction: float = DEFAULT_ITERATIONS_FRACTION,
    ) -> ScheduleRecord:
        """A new schedule, first due after `now`; `DuplicateScheduleName` if the name is taken."""
        row = Schedule(
            owner_id=owner_id,
            name=name,
            cron=check_cron(cron),
            timezone=timezone,
            spec=spec,
            enabled=enabled,
            points_threshold=points_threshold,
            iterations_fraction=iterations_fraction,
            next_run_at=next_due(cron, timezone, now),
        )
        try:
            with self._session() as session:
                session.add(row)
                session.flush()
                record: ScheduleRecord = _record(ScheduleRecord, row)
        except IntegrityError:
            raise DuplicateScheduleName(_taken(name)) from None
        return record

    def get(self, schedule_id: int, owner_id: int | None = None) -> ScheduleRecord | None:
        """The schedule, if it exists and belongs to `owner_id` (None: any owner)."""
        query = select(Schedule).where(Schedule.id == schedule_id)
        if owner_id is not None:
            query = query.where(Schedule.owner_id == owner_id)
        with self._session() as session:
            row = session.scalars(query).one_or_none()
            return None if row is None else _record(ScheduleRecord, row)

    def list_schedules(self, owner_id: int | None = None) -> list[ScheduleRecord]:
        """Every schedule of `owner_id` (None: of every owner), oldest first."""
        query = select(Schedule).order_by(Schedule.id)
        if owner_id is not None:
            query = query.where(Schedule.owner_id == owner_id)
        with self._session() as session:
            return [_record(ScheduleRecord, row) for row in session.scalars(query)]

    def update(
        self, schedule_id: int, changes: Mapping[str, Any], *, now: datetime
    ) -> ScheduleRecord:
        """Apply `changes` (fields of SCHEDULE_FIELDS); a new rule, time zone or re-enabling
        makes the next due time the first after `now` (a paused schedule does not catch up)."""
        unknown = set(changes) - set(SCHEDULE_FIELDS)
        if unknown:
            raise ValueError(
                f"fields {sorted(unknown)} cannot be changed; allowed: {SCHEDULE_FIELDS}"
            )
        try:
            with self._session() as session:
                row = session.get(Schedule, schedule_id)
                if row is None:
                    raise LookupError(f"no schedule {schedule_id}")
                resume = changes.get("enabled") is True and not row.enabled
                for name, value in changes.items():
                    setattr(row, name, value)
                check_cron(row.cron)
                check_timezone(row.timezone)
                if resume or {"cron", "timezone"} & changes.keys():
                    row.next_run_at = next_due(row.cron, row.timezone, now)
                session.flush()
                record: ScheduleRecord = _record(ScheduleRecord, row)
        except IntegrityError:
            raise DuplicateScheduleName(_taken(changes.get("name"))) from None
        return record

    def delete(self, schedule_id: int) -> bool:
        """Delete a schedule and its runs; the studies it created stay."""
        with self._session() as session:
            result = session.execute(delete(Schedule).where(Schedule.id == schedule_id))
            return cast(CursorResult[Any], result).rowcount == 1

    def due(self, now: datetime) -> list[ScheduleRecord]:
        """Enabled schedules whose next due time is at or before `now`."""
        with self._session() as session:
            rows = session.scalars(
                select(Schedule)
                .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
                .order_by(Schedule.next_run_at, Schedule.id)
            )
            return [_record(ScheduleRecord, row) for row in rows]

    def claim_run(
        self,
        schedule: ScheduleRecord,
        due_at: datetime,
        next_run_at: datetime,
        *,
        state: str = "created",
        reason: str | None = None,
    ) -> ScheduleRunRecord | None:
        """Record the run for `due_at` and move the schedule on to `next_run_at`, atomically;
        None if another process claimed it first, or the schedule was disabled or deleted.

        The UPDATE only matches while `next_run_at` is still the value `schedule` was read
        with (on PostgreSQL a concurrent claimer waits for the row lock, then re-checks); the
        unique (schedule, due time) constraint stops any claim that slips past it.
        """
        try:
            with self._session() as session:
                result = session.execute(
                    update(Schedule)
                    .where(
                        Schedule.id == schedule.id,
                        Schedule.enabled.is_(True),
                        Schedule.next_run_at == schedule.next_run_at,
                    )
                    .values(next_run_at=next_run_at, last_run_at=due_at)
                )
                if cast(CursorResult[Any], result).rowcount != 1:
                    return None
                row = ScheduleRun(
                    schedule_id=schedule.id, due_at=due_at, state=state, reason=reason
                )
                session.add(row)
                session.flush()
                record: ScheduleRunRecord = _record(ScheduleRunRecord, row)
        except IntegrityError:
            return None
        return record

    def attach_study(self, run_id: int, study_id: str) -> None:
        """Link a created run to its study."""
        with self._session() as session:
            session.execute(
                update(ScheduleRun)
                .where(ScheduleRun.id == run_id, ScheduleRun.study_id.is_(None))
                .values(study_id=study_id)
            )

    def runs(self, schedule_id: int, limit: int | None = None) -> list[ScheduleRunRecord]:
        """The schedule's runs, newest due time first."""
        query = (
            select(ScheduleRun)
            .where(ScheduleRun.schedule_id == schedule_id)
            .order_by(ScheduleRun.due_at.desc())
            .limit(limit)
        )
        with self._session() as session:
            return [_record(ScheduleRunRecord, row) for row in session.scalars(query)]

    def latest_created_run(self, schedule_id: int) -> ScheduleRunRecord | None:
        with self._session() as session:
            row = session.scalars(
                select(ScheduleRun)
                .where(ScheduleRun.schedule_id == schedule_id, ScheduleRun.state == "created")
                .order_by(ScheduleRun.due_at.desc())
                .limit(1)
            ).one_or_none()
            return None if row is None else _record(ScheduleRunRecord, row)

    def unattached_runs(self) -> list[ScheduleRunRecord]:
        """Created runs without a study: their claimer stopped before creating it."""
        with self._session() as session:
            rows = session.scalars(
                select(ScheduleRun)
                .where(ScheduleRun.state == "created", ScheduleRun.study_id.is_(None))
                .order_by(ScheduleRun.id)
            )
            return [_record(ScheduleRunRecord, row) for row in rows]


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
        schedules: ScheduleStore,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        interval_s: float = 5.0,
    ) -> None:
        self.store = store
        self.schedules = schedules
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
        for pending in self.schedules.unattached_runs():
            self._create_study(pending)
        claimed = []
        for schedule in self.schedules.due(now):
            due_at = latest_due(schedule.cron, schedule.timezone, schedule.next_run_at, now)
            reason = self._skip_reason(schedule, due_at)
            run = self.schedules.claim_run(
                schedule,
                due_at,
                next_due(schedule.cron, schedule.timezone, now),
                state="skipped" if reason else "created",
                reason=reason,
            )
            if run is None:
                continue  # another process claimed it, or it was disabled or deleted
            if run.state == "created":
                study = self._create_study(run)
                run = replace(run, study_id=study.id if study else None)
            log.info("schedule %s: run for %s %s", schedule.id, due_at, run.state)
            claimed.append(run)
        return claimed

    def _skip_reason(self, schedule: ScheduleRecord, due_at: datetime) -> str | None:
        previous = self.schedules.latest_created_run(schedule.id)
        if previous is not None and previous.study_id is not None:
            study = self.store.get_study(previous.study_id)
            if study is not None and study.status in ACTIVE_STATUSES:
                return f"the previous run's study {study.id} is still {study.status}"
        try:
            self._spec(schedule, study_name(schedule, due_at))
        except ValidationError as error:
            return f"the template spec is no longer valid under the server's limits: {error}"
        return None

    def _spec(self, schedule: ScheduleRecord, name: str) -> dict[str, Any]:
        """The template named `name`, validated under the server's limits as they are now."""
        from workers.spec import StudySpec  # late: the spec pulls in the workers' registries

        spec = StudySpec.model_validate(
            {**schedule.spec, "name": name}, context={"limits": self.settings.limits()}
        )
        dumped: dict[str, Any] = spec.model_dump(mode="json")
        return dumped

    def _create_study(self, run: ScheduleRunRecord) -> StudyRecord | None:
        schedule = self.schedules.get(run.schedule_id)
        if schedule is None:
            return None
        name = study_name(schedule, run.due_at)
        try:
            spec = self._spec(schedule, name)
        except ValidationError:
            # The limits changed since this run was claimed: the template as it was accepted.
            spec = {**schedule.spec, "name": name}
        study, _ = self.store.create_study(schedule.owner_id, spec, name, idempotency_key(run))
        self.schedules.attach_study(run.id, study.id)
        return study


# --------------------------------------------------------------------------------------
# regressions


def _headline(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["arm"]: row for row in report.get("arms") or ()}


def compare_runs(
    previous_report: Mapping[str, Any],
    current_report: Mapping[str, Any],
    *,
    points_threshold: float = DEFAULT_POINTS_THRESHOLD,
    iterations_fraction: float = DEFAULT_ITERATIONS_FRACTION,
) -> list[dict[str, Any]]:
    """Per arm of the current report: deltas against the previous one and whether it regressed.

    A regression: the final accuracy mean falls below the previous run's 95% CI low (with one
    previous seed, no CI: by more than `points_threshold` percentage points); or the
    iterations to target rise by more than `iterations_fraction`, or the target is no longer
    reached at all. Arms new in the current report have nothing to compare with.
    """
    before = _headline(previous_report)
    deltas = []
    for arm, row in _headline(current_report).items():
        final = row["final_accuracy"]["mean"]
        its = row["iterations_to_target"]["mean"]
        old = before.get(arm)
        entry: dict[str, Any] = {
            "arm": arm,
            "final_accuracy": final,
            "previous_final_accuracy": None,
            "previous_ci_low": None,
            "final_accuracy_delta_points": None,
            "iterations_to_target": its,
            "previous_iterations_to_target": None,
            "iterations_change": None,
            "regression": False,
            "reasons": [],
        }
        if old is None:
            entry["reasons"] = ["new arm: nothing to compare with"]
            deltas.append(entry)
            continue
        old_final = old["final_accuracy"]
        old_its = old["iterations_to_target"]["mean"]
        entry["previous_final_accuracy"] = old_final["mean"]
        entry["previous_ci_low"] = old_final["ci_low"]
        entry["previous_iterations_to_target"] = old_its
        problems = []
        if final is not None and old_final["mean"] is not None:
            drop = 100 * (old_final["mean"] - final)
            entry["final_accuracy_delta_points"] = -drop
            if old_final["ci_low"] is not None:
                if final < old_final["ci_low"]:
                    problems.append(
                        f"final accuracy {100 * final:.1f}% is below the previous run's 95% "
                        f"interval (from {100 * old_final['ci_low']:.1f}%)"
                    )
            elif drop > points_threshold:
                problems.append(
                    f"final accuracy fell {drop:.1f} points (more than {points_threshold:g}) "
                    f"from {100 * old_final['mean']:.1f}% to {100 * final:.1f}%"
                )
        elif final is None and old_final["mean"] is not None:
            problems.append("no seed finished, the previous run had a final accuracy")
        if old_its is not None:
            if its is None:
                problems.append("no longer reaches the target accuracy")
            else:
                change = its / old_its - 1
                entry["iterations_change"] = change
                if change > iterations_fraction:
                    problems.append(
                        f"iterations to target rose {100 * change:.0f}% (more than "
                        f"{100 * iterations_fraction:.0f}%) from {old_its:,.0f} to {its:,.0f}"
                    )
        entry["regression"] = bool(problems)
        entry["reasons"] = problems
        deltas.append(entry)
    return deltas


# --------------------------------------------------------------------------------------
# history


def headline_figures(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per arm: final accuracy mean and 95% CI, iterations to target, speedup vs baseline."""
    return [
        {
            "arm": row["arm"],
            "final_accuracy": row["final_accuracy"]["mean"],
            "ci_low": row["final_accuracy"]["ci_low"],
            "ci_high": row["final_accuracy"]["ci_high"],
            "iterations_to_target": row["iterations_to_target"]["mean"],
            "speedup": row["speedup"],
        }
        for row in report.get("arms") or ()
    ]


def history(
    store: Store,
    schedules: ScheduleStore,
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
    from service.reports import build_report  # late: reports pull in numpy and scipy

    runs = schedules.runs(schedule.id)
    studies: dict[str, StudyRecord] = {}
    for run in runs:
        if run.study_id is not None and (study := store.get_study(run.study_id)) is not None:
            studies[study.id] = study
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
        results = store.results(study_id)
        if results is not None:
            reports[study_id] = build_report(results)
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


def latest_comparison(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The newest run's comparison with its predecessor, from `history`'s entries."""
    for entry in entries:
        if entry["comparison"] is not None:
            return {"due_at": entry["due_at"], "study_id": entry["study_id"], **entry["comparison"]}
    return None


# --------------------------------------------------------------------------------------
# the schedule's page

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } .meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; }
th { background: #f4f4f4; } tr.regression td { background: #fde2e2; }
.banner { padding: 0.6em 1em; border-radius: 4px; background: #fde2e2; border: 1px solid #d66; }
figure.plot svg { max-width: 100%; height: auto; }
"""


def history_figure(entries: Sequence[Mapping[str, Any]]) -> str:
    """Final accuracy per arm over the runs' due times (regressions circled red), as SVG."""
    from service.reports.figures import _figure, _legend, _svg, arm_colors

    ordered = [e for e in reversed(entries) if e["arms"]]
    arms = list(dict.fromkeys(a["arm"] for e in ordered for a in e["arms"]))
    colors = arm_colors(arms)
    figure, (ax,) = _figure()
    for arm in arms:
        points = [
            (datetime.fromisoformat(e["due_at"]), a["final_accuracy"])
            for e in ordered
            for a in e["arms"]
            if a["arm"] == arm and a["final_accuracy"] is not None
        ]
        if points:
            times, values = zip(*points, strict=True)
            # matplotlib plots datetimes through its date converter; the stubs say floats.
            ax.plot(
                list(times),
                values,
                color=colors[arm],
                marker="o",
                ms=3,
                lw=1.2,
                label=arm,
            )
    for entry in ordered:
        for delta in (entry["comparison"] or {}).get("arms", ()):
            if delta["regression"] and delta["final_accuracy"] is not None:
                when = datetime.fromisoformat(entry["due_at"])
                ax.plot(
                    [when],  # type: ignore[arg-type]
                    [delta["final_accuracy"]],
                    "o",
                    ms=9,
                    mfc="none",
                    mec="#d62728",
                )
    ax.set_title("final accuracy per arm (mean over seeds); red circles: regressions")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    figure.autofmt_xdate()
    if arms:
        _legend(figure)
    else:
        ax.text(0.5, 0.5, "no finished run yet", ha="center", transform=ax.transAxes)
    return _svg(figure)


def _cell(value: float | None, pattern: str) -> str:
    return "&ndash;" if value is None else pattern.format(value)


def render_schedule_html(schedule: ScheduleRecord, entries: Sequence[Mapping[str, Any]]) -> str:
    """The schedule's page: its settings, a history table and a plot; regressions in red."""
    rows = []
    for entry in entries:
        comparison = entry["comparison"] or {}
        flagged = {d["arm"]: d for d in comparison.get("arms", ()) if d["regression"]}
        status = entry["study_status"] or ""
        state = escape(entry["state"] + (f": {entry['reason']}" if entry["reason"] else ""))
        for figures in entry["arms"] or [None]:
            arm = figures["arm"] if figures else None
            delta = flagged.get(arm) if arm else None
            rows.append(
                f'<tr class="{"regression" if delta else ""}">'
                f"<td>{escape(entry['due_at'])}</td><td>{state}</td>"
                f"<td>{escape(entry['study_id'] or '')}</td><td>{escape(status)}</td>"
                f"<td>{escape(arm or '')}</td>"
                f"<td>{_cell(figures and figures['final_accuracy'], '{:.1%}')}</td>"
                f"<td>{_cell(figures and figures['iterations_to_target'], '{:,.0f}')}</td>"
                f"<td>{_cell(figures and figures['speedup'], '{:.2f}x')}</td>"
                f"<td>{escape('; '.join(delta['reasons'])) if delta else ''}</td></tr>"
            )
    latest = latest_comparison(entries)
    banner = ""
    if latest is not None and latest["regression"]:
        arms = ", ".join(d["arm"] for d in latest["arms"] if d["regression"])
        banner = (
            f'<p id="regression" class="banner">Regression in the latest run '
            f"({escape(latest['due_at'])}): {escape(arms)}</p>"
        )
    head = (
        "due (UTC)", "run", "study", "status", "arm", "final accuracy", "iterations to target",
        "speedup", "regression",
    )  # fmt: skip
    enabled = "enabled" if schedule.enabled else "disabled"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>schedule {escape(schedule.name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(schedule.name)}</h1>"
        f'<p class="meta"><code>{escape(schedule.cron)}</code> in {escape(schedule.timezone)}, '
        f"{enabled}; next run {escape(schedule.next_run_at.isoformat())}</p>{banner}"
        f'<figure class="plot">{history_figure(entries)}</figure>'
        f'<table id="history"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></body></html>"
    )
