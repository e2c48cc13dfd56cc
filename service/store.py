"""All reads and writes of the service's tables. Every method runs in its own session and
returns frozen records, never ORM rows.

Schedules are claimed by two service processes at once: `claim_schedule_run` claims a due
run with a conditional UPDATE of `next_run_at` plus an INSERT that the unique (schedule, due
time) constraint guards, so no two processes record, nor create a study for, the same run.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.cron import check_cron, check_timezone, next_due
from service.db import session_factory, session_scope
from service.models import (
    ApiKey,
    BrowserSession,
    EvalPoint,
    Owner,
    RangeTestPoint,
    ReportCache,
    Schedule,
    ScheduleRun,
    Study,
    Trial,
    TuningTrial,
    utcnow,
)
from workers import events
from workers.results import (
    TRIAL_ENTRY_FIELDS,
    RangeTestEntry,
    TrialEntry,
    finite,
    planned_tuning,
    point_entry,
    results_document,
)
from workers.states import (
    COUNTED_TUNING_TRIAL_STATES,
    ENDED_TRIAL_STATES,
    STUDY_PHASES,
    STUDY_STATUSES,
    STUDY_TRANSITIONS,
    TERMINAL_STUDY_STATUSES,
    TUNING_TRIAL_STATES,
)

API_KEY_PREFIX = "clr_"
# A key's last use is written at most this often: reads should not all turn into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)
EVAL_POINT_FIELDS = tuple(f.name for f in fields(events.EvalPoint))
RANGE_POINT_FIELDS = tuple(f.name for f in fields(events.RangeTestPoint))
RESULT_TRIAL_FIELDS = tuple(f for f in TRIAL_ENTRY_FIELDS if f != "points")
TUNING_TRIAL_FIELDS = (
    "number", "params", "state", "iterations_done", "value", "wall_s", "error", "node_id",
)  # fmt: skip
SCHEDULE_FIELDS = (
    "name", "cron", "timezone", "spec", "enabled", "points_threshold", "iterations_fraction",
)  # fmt: skip


class AmbiguousKey(LookupError):
    """A key prefix that matches more than one key."""


class InvalidTransition(ValueError):
    """A study status change that the lifecycle does not allow."""


class DuplicateScheduleName(ValueError):
    """The owner has a schedule of that name already."""


class TooManyStudies(Exception):
    """The owner has as many queued studies as the server allows."""


class TooManySchedules(Exception):
    """The owner has as many schedules as the server allows."""


class IdempotencyKeyReused(ValueError):
    """The owner used the idempotency key already, for another spec: `study` is that study."""

    def __init__(self, study: StudyRecord) -> None:
        super().__init__(
            f"this Idempotency-Key created study {study.id} from another spec; "
            "use a new key for a new study"
        )
        self.study = study


@dataclass(frozen=True)
class OwnerRecord:
    id: int
    name: str
    admin: bool


@dataclass(frozen=True)
class ApiKeyRecord:
    id: int
    owner: OwnerRecord
    prefix: str  # the key's first characters, to tell keys apart in listings
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = None


@dataclass(frozen=True)
class StudyRecord:
    id: str
    owner_id: int
    name: str
    spec: dict[str, Any]
    status: str
    phase: str
    error: str | None
    error_detail: str | None  # admins only
    idempotency_key: str | None
    submission_id: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    bounds: dict[str, Any] | None
    resolved_arms: dict[str, Any] | None
    iterations_per_epoch: int | None
    range_test_stopped_at: int | None
    range_test_stop_reason: str | None
    range_test_node_id: str | None


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    arm: str
    seed: int
    state: str
    error: str | None
    node_id: str | None
    iterations: int
    iterations_done: int
    wall_s: float | None
    started_at: datetime | None
    ended_at: datetime | None


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


@dataclass(frozen=True)
class Progress:
    """How far a study is; finished trials count their whole budget as done."""

    trials_done: int
    trials_total: int
    iterations_done: int
    iterations_total: int
    best_accuracy: dict[str, float] = field(default_factory=dict)  # per arm, so far
    # Tuning trials of tuned arms that have ended and count towards their searches (not the
    # interrupted or cancelled ones, which are replaced), and those planned (0: none tuned).
    tuning_trials_done: int = 0
    tuning_trials_total: int = 0


def hash_api_key(key: str) -> str:
    """The stored form of an API key (see `service.models.ApiKey` for why SHA-256)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _columns(row: Any, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}


def _record(cls: type[Any], row: Any) -> Any:
    return cls(**_columns(row, cls.__dataclass_fields__))


def _key_record(key: ApiKey, owner: Owner) -> ApiKeyRecord:
    return ApiKeyRecord(
        key.id,
        _record(OwnerRecord, owner),
        key.prefix,
        key.created_at,
        key.revoked_at,
        key.last_used_at,
    )


def _point_row(point: events.EvalPoint | events.RangeTestPoint, **keys: Any) -> dict[str, Any]:
    """A point's columns, as results.json holds it: a NaN or infinite number becomes NULL."""
    return {**point_entry(point), **keys}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _insert(session: Session, model: type[Any]) -> sqlite.Insert | postgresql.Insert:
    """An INSERT that knows `ON CONFLICT` on this session's backend."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model.__table__)


def _planned_tuning() -> dict[str, Any]:
    """A tuned arm's summary before its search started (its trials live in their table)."""
    entry = planned_tuning()
    del entry["trials"]
    return entry


def _check_one_of(field_name: str, value: str, allowed: Iterable[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{field_name} {value!r} is not one of {', '.join(allowed)}")


def _taken(name: Any) -> str:
    return f"name {name!r}: you have a schedule of that name already"


# pg_advisory_xact_lock's key for the dispatchers' start decisions: any constant that no
# other user of the database locks ("clrstudy" in ASCII, read as a number).
DISPATCH_LOCK = 0x636C727374756479


def _lock(session: Session, owner_id: int | None = None) -> None:
    """Serialize this transaction, until it ends, with every other one that locks the same:
    the owner's row (`owner_id`) or the dispatchers' start decision (None).

    PostgreSQL: the owner's row FOR UPDATE, or an advisory lock. SQLite has one writer at a
    time: a write as the transaction's first statement takes the database's write lock
    (waiting for it), so the reads after it see every committed write.
    """
    if session.get_bind().dialect.name == "postgresql":
        if owner_id is None:
            session.execute(select(func.pg_advisory_xact_lock(DISPATCH_LOCK)))
        else:
            session.execute(select(Owner.id).where(Owner.id == owner_id).with_for_update())
        return
    session.execute(update(Owner).where(Owner.id == (owner_id or -1)).values(name=Owner.name))


def spec_digest(spec: Mapping[str, Any]) -> str:
    """The SHA-256 of a spec's canonical JSON: what an idempotency key is stored with."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class Store:
    """The service's database, through frozen records."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)

    def _session(self) -> AbstractContextManager[Session]:
        return session_scope(self._sessions)

    # --- owners and API keys -----------------------------------------------------------

    def create_api_key(self, name: str, admin: bool = False) -> tuple[ApiKeyRecord, str]:
        """A new key for owner `name` (created if new); the plaintext key is returned only here."""
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self._session() as session:
            owner = session.scalars(select(Owner).where(Owner.name == name)).one_or_none()
            if owner is None:
                owner = Owner(name=name, admin=admin)
                session.add(owner)
                session.flush()
            elif owner.admin != admin:
                raise ValueError(
                    f"admin {admin} does not match owner {name!r}, which has admin {owner.admin}"
                )
            row = ApiKey(owner_id=owner.id, key_hash=hash_api_key(key), prefix=key[:12])
            session.add(row)
            session.flush()
            record = _key_record(row, owner)
        return record, key

    def authenticate(self, key: str) -> OwnerRecord | None:
        """The owner of an unrevoked key, or None; notes the key's use."""
        return self._authenticated(ApiKey.key_hash == hash_api_key(key))

    def _authenticated(self, *conditions: Any) -> OwnerRecord | None:
        """The owner of the one unrevoked key matching `conditions`; its use noted."""
        now = utcnow()
        with self._session() as session:
            row = session.execute(
                select(Owner, ApiKey.id)
                .join(ApiKey, ApiKey.owner_id == Owner.id)
                .where(ApiKey.revoked_at.is_(None), *conditions)
            ).one_or_none()
            if row is None:
                return None
            owner, key_id = row
            session.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == key_id,
                    (ApiKey.last_used_at.is_(None))
                    | (ApiKey.last_used_at < now - LAST_USED_RESOLUTION),
                )
                .values(last_used_at=now)
            )
            return cast(OwnerRecord, _record(OwnerRecord, owner))

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones included, oldest first."""
        with self._session() as session:
            rows = session.execute(
                select(ApiKey, Owner).join(Owner, ApiKey.owner_id == Owner.id).order_by(ApiKey.id)
            ).all()
            return [_key_record(key, owner) for key, owner in rows]

    def find_api_key(self, id_or_prefix: str) -> ApiKeyRecord | None:
        """The key with this id, or the one key whose prefix starts with `id_or_prefix`;
        `AmbiguousKey` when several do (prefixes are not unique)."""
        keys = self.list_api_keys()
        if id_or_prefix.isascii() and id_or_prefix.isdigit():
            return next((k for k in keys if k.id == int(id_or_prefix)), None)
        matches = [k for k in keys if id_or_prefix and k.prefix.startswith(id_or_prefix)]
        if len(matches) > 1:
            raise AmbiguousKey(
                f"{id_or_prefix!r} is the prefix of {len(matches)} keys (ids "
                f"{', '.join(str(k.id) for k in matches)}): give the id or a longer prefix"
            )
        return matches[0] if matches else None

    def revoke_api_key(self, key_id: int) -> bool:
        """Revoke a key and end its browser sessions; False if there is no such unrevoked
        key. Its owner's studies stay."""
        with self._session() as session:
            result = session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            session.execute(delete(BrowserSession).where(BrowserSession.key_id == key_id))
            return cast(CursorResult[Any], result).rowcount == 1

    # --- browser sessions --------------------------------------------------------------

    def create_browser_session(self, key: str, max_age: timedelta) -> str | None:
        """A new session of an unrevoked key, valid for `max_age`: the id for the cookie
        (stored only as its hash); None for a key that is not valid."""
        with self._session() as session:
            key_id = session.scalar(
                select(ApiKey.id).where(
                    ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None)
                )
            )
            if key_id is None:
                return None
            token = secrets.token_urlsafe(32)
            session.add(
                BrowserSession(
                    key_id=key_id,
                    session_hash=hash_api_key(token),
                    expires_at=utcnow() + max_age,
                )
            )
            # Expired sessions of the key go as a new one comes.
            session.execute(
                delete(BrowserSession).where(
                    BrowserSession.key_id == key_id, BrowserSession.expires_at < utcnow()
                )
            )
        return token

    def authenticate_session(self, token: str) -> OwnerRecord | None:
        """The owner of an unexpired session of an unrevoked key, or None."""
        return self._authenticated(
            ApiKey.id.in_(
                select(BrowserSession.key_id).where(
                    BrowserSession.session_hash == hash_api_key(token),
                    BrowserSession.expires_at > utcnow(),
                )
            )
        )

    def end_browser_session(self, token: str) -> None:
        """Delete the session (logout); unknown ones are ignored."""
        with self._session() as session:
            session.execute(
                delete(BrowserSession).where(BrowserSession.session_hash == hash_api_key(token))
            )

    # --- studies -----------------------------------------------------------------------

    def create_study(
        self,
        owner_id: int,
        spec: dict[str, Any],
        name: str,
        idempotency_key: str | None = None,
        *,
        max_queued: int | None = None,
    ) -> tuple[StudyRecord, bool]:
        """A new queued study and True; or, when this owner already used `idempotency_key`
        for the same spec, that study and False (`IdempotencyKeyReused` for another spec).

        With `max_queued`, raises `TooManyStudies` when the owner has that many queued
        studies; the count and the insert hold the owner's lock, so parallel requests
        cannot both pass it.
        """
        digest = spec_digest(spec)
        if idempotency_key is not None and (found := self.study_by_key(owner_id, idempotency_key)):
            return self._same_spec(found, digest), False
        try:
            with self._session() as session:
                if max_queued is not None:
                    _lock(session, owner_id)
                    queued = session.scalar(
                        select(func.count()).where(
                            Study.owner_id == owner_id, Study.status == "queued"
                        )
                    )
                    if (queued or 0) >= max_queued:
                        raise TooManyStudies(
                            f"you have {queued} queued studies, the most allowed "
                            f"(MAX_QUEUED_STUDIES_PER_OWNER={max_queued}); wait for some to "
                            "start or cancel one"
                        )
                study = Study(
                    id=str(uuid.uuid4()),
                    owner_id=owner_id,
                    name=name,
                    spec=spec,
                    idempotency_key=idempotency_key,
                    idempotency_body_hash=None if idempotency_key is None else digest,
                )
                session.add(study)
                session.flush()
                record: StudyRecord = _record(StudyRecord, study)
        except IntegrityError:
            # Another request with the same key won the race; the constraint kept one study.
            if idempotency_key is None or not (
                found := self.study_by_key(owner_id, idempotency_key)
            ):
                raise
            return self._same_spec(found, digest), False
        return record, True

    def _same_spec(self, study: StudyRecord, digest: str) -> StudyRecord:
        with self._session() as session:
            stored = session.scalar(select(Study.idempotency_body_hash).where(Study.id == study.id))
        if stored is not None and stored != digest:
            raise IdempotencyKeyReused(study)
        return study

    def study_by_key(self, owner_id: int, idempotency_key: str) -> StudyRecord | None:
        """The study this owner created with `idempotency_key`, if any."""
        with self._session() as session:
            study = session.scalars(
                select(Study).where(
                    Study.owner_id == owner_id, Study.idempotency_key == idempotency_key
                )
            ).one_or_none()
            return None if study is None else _record(StudyRecord, study)

    def get_study(self, study_id: str, owner_id: int | None = None) -> StudyRecord | None:
        """The study, if it exists and belongs to `owner_id` (None: any owner)."""
        query = select(Study).where(Study.id == study_id)
        if owner_id is not None:
            query = query.where(Study.owner_id == owner_id)
        with self._session() as session:
            study = session.scalars(query).one_or_none()
            return None if study is None else _record(StudyRecord, study)

    def list_studies(
        self,
        owner_id: int | None = None,
        status: str | None = None,
        name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[StudyRecord], int]:
        """One page of studies, newest first, and how many match in all.

        `owner_id` None lists every owner's; `name` matches a substring, ignoring case.
        """
        query = select(Study)
        if owner_id is not None:
            query = query.where(Study.owner_id == owner_id)
        if status is not None:
            _check_one_of("status", status, STUDY_STATUSES)
            query = query.where(Study.status == status)
        if name:
            query = query.where(func.lower(Study.name).contains(name.lower(), autoescape=True))
        with self._session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            page = session.scalars(
                query.order_by(Study.created_at.desc(), Study.id).limit(limit).offset(offset)
            )
            return [_record(StudyRecord, s) for s in page], total

    def claim_next_study(self, max_running: int, max_running_per_owner: int) -> StudyRecord | None:
        """Move the next queued study to `running` and return it; None while `max_running`
        studies run, or no owner with a queued study runs fewer than `max_running_per_owner`.

        Owners take turns: the next study is the oldest queued one of the owner who has
        waited longest since a study of theirs last started (never: first). The decision
        holds the dispatchers' lock, so several service processes together keep the limits.
        """
        with self._session() as session:
            _lock(session)
            running = dict(
                session.execute(
                    select(Study.owner_id, func.count())
                    .where(Study.status == "running")
                    .group_by(Study.owner_id)
                ).all()
            )
            if sum(running.values()) >= max_running:
                return None
            waiting = {
                owner: oldest
                for owner, oldest in session.execute(
                    select(Study.owner_id, func.min(Study.created_at))
                    .where(Study.status == "queued")
                    .group_by(Study.owner_id)
                )
                if running.get(owner, 0) < max_running_per_owner
            }
            if not waiting:
                return None
            last_start = dict(
                session.execute(
                    select(Study.owner_id, func.max(Study.started_at))
                    .where(Study.owner_id.in_(waiting))
                    .group_by(Study.owner_id)
                ).all()
            )
            owner = min(
                waiting,
                key=lambda o: (last_start.get(o) is not None, last_start.get(o), waiting[o], o),
            )
            study = session.scalars(
                select(Study)
                .where(Study.owner_id == owner, Study.status == "queued")
                .order_by(Study.created_at, Study.id)
                .limit(1)
            ).one()
            # Conditional: a cancel (which takes no lock) may have come first.
            started = session.execute(
                update(Study)
                .where(Study.id == study.id, Study.status == "queued")
                .values(status="running", started_at=utcnow())
            )
            if cast(CursorResult[Any], started).rowcount != 1:
                return None
            session.refresh(study)
            return cast(StudyRecord, _record(StudyRecord, study))

    def running_studies(self) -> list[StudyRecord]:
        return self._studies(
            select(Study).where(Study.status == "running").order_by(Study.created_at)
        )

    def studies_by_id(self, study_ids: Collection[str]) -> dict[str, StudyRecord]:
        """The studies of these ids that exist, in one query."""
        if not study_ids:
            return {}
        return {s.id: s for s in self._studies(select(Study).where(Study.id.in_(study_ids)))}

    def _studies(self, query: Any) -> list[StudyRecord]:
        with self._session() as session:
            return [_record(StudyRecord, s) for s in session.scalars(query)]

    def transition(
        self,
        study_id: str,
        to: str,
        *,
        expected: set[str],
        error: str | None = None,
        phase: str | None = None,
        error_detail: str | None = None,
    ) -> bool:
        """Move a study from one of the `expected` statuses to `to`, atomically.

        `error` is for the owner; `error_detail` (a job log, a traceback) for admins only.

        Raises `InvalidTransition` if the lifecycle forbids any expected -> to; returns False
        if the study is not (any more) in an expected status, e.g. another process moved it.
        """
        for source in sorted(expected):
            if to not in STUDY_TRANSITIONS.get(source, ()):
                raise InvalidTransition(f"a study cannot go from {source!r} to {to!r}")
        values: dict[str, Any] = {"status": to}
        if to == "running":
            values["started_at"] = utcnow()
        if to in TERMINAL_STUDY_STATUSES:
            values["finished_at"] = utcnow()
        if to == "succeeded" and phase is None:
            phase = "done"
        if phase is not None:
            _check_one_of("phase", phase, STUDY_PHASES)
            values["phase"] = phase
        if error is not None:
            values["error"] = error
        if error_detail is not None:
            values["error_detail"] = error_detail
        return self._update_study(study_id, values, Study.status.in_(expected))

    def _update_study(self, study_id: str, values: dict[str, Any], *conditions: Any) -> bool:
        with self._session() as session:
            result = session.execute(
                update(Study).where(Study.id == study_id, *conditions).values(**values)
            )
            return cast(CursorResult[Any], result).rowcount == 1

    def set_phase(self, study_id: str, phase: str) -> None:
        _check_one_of("phase", phase, STUDY_PHASES)
        self._update_study(study_id, {"phase": phase})

    def set_submission_id(self, study_id: str, submission_id: str) -> None:
        """Remember the Ray job that runs the study."""
        self._update_study(study_id, {"submission_id": submission_id})

    def request_cancel(self, study_id: str) -> StudyRecord | None:
        """Cancel a queued study now, or flag a running one for the dispatcher to stop.

        Returns the study afterwards (None if unknown); raises `InvalidTransition` if it has
        finished already.
        """
        while True:
            if self.transition(study_id, "cancelled", expected={"queued"}):
                break
            if self._update_study(study_id, {"cancel_requested": True}, Study.status == "running"):
                break
            study = self.get_study(study_id)
            if study is None:
                return None
            if study.status in TERMINAL_STUDY_STATUSES:
                raise InvalidTransition(f"study {study_id} has already {study.status}")
            # Otherwise it moved from queued to running in between: try again.
        return self.get_study(study_id)

    def delete_study(self, study_id: str) -> bool:
        """Delete a study that is not running, and every row about it; False if it is
        running or unknown. Its schedule run stays, as skipped: the scheduler must not
        create the study again."""
        with self._session() as session:
            session.execute(
                update(ScheduleRun)
                .where(ScheduleRun.study_id == study_id)
                .values(state="skipped", reason=f"its study {study_id} was deleted")
            )
            result = session.execute(
                delete(Study).where(Study.id == study_id, Study.status != "running")
            )
            if cast(CursorResult[Any], result).rowcount != 1:
                session.rollback()
                return False
            return True

    def studies_with_checkpoints(self, finished_before: datetime) -> list[str]:
        """Studies that ended before `finished_before` whose checkpoints were not removed."""
        with self._session() as session:
            return list(
                session.scalars(
                    select(Study.id)
                    .where(
                        Study.finished_at < finished_before,
                        Study.checkpoints_removed_at.is_(None),
                    )
                    .order_by(Study.finished_at)
                )
            )

    def mark_checkpoints_removed(self, study_id: str) -> None:
        self._update_study(study_id, {"checkpoints_removed_at": utcnow()})

    # --- schedules and their runs ------------------------------------------------------

    def create_schedule(
        self,
        owner_id: int,
        name: str,
        cron: str,
        timezone: str,
        spec: dict[str, Any],
        *,
        now: datetime,
        points_threshold: float,
        iterations_fraction: float,
        enabled: bool = True,
        max_schedules: int | None = None,
    ) -> ScheduleRecord:
        """A new schedule, first due after `now`; `DuplicateScheduleName` if the name is taken,
        `TooManySchedules` if the owner has `max_schedules` already (counted under the
        owner's lock)."""
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
                if max_schedules is not None:
                    _lock(session, owner_id)
                    count = session.scalar(
                        select(func.count()).where(Schedule.owner_id == owner_id)
                    )
                    if (count or 0) >= max_schedules:
                        raise TooManySchedules(
                            f"you have {count} schedules, the most allowed "
                            f"(MAX_SCHEDULES_PER_OWNER={max_schedules}); delete one first"
                        )
                session.add(row)
                session.flush()
                record: ScheduleRecord = _record(ScheduleRecord, row)
        except IntegrityError:
            raise DuplicateScheduleName(_taken(name)) from None
        return record

    def get_schedule(self, schedule_id: int, owner_id: int | None = None) -> ScheduleRecord | None:
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

    def update_schedule(
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

    def delete_schedule(self, schedule_id: int) -> bool:
        """Delete a schedule and its runs; the studies it created stay."""
        with self._session() as session:
            result = session.execute(delete(Schedule).where(Schedule.id == schedule_id))
            return cast(CursorResult[Any], result).rowcount == 1

    def due_schedules(self, now: datetime) -> list[ScheduleRecord]:
        """Enabled schedules whose next due time is at or before `now`."""
        with self._session() as session:
            rows = session.scalars(
                select(Schedule)
                .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
                .order_by(Schedule.next_run_at, Schedule.id)
            )
            return [_record(ScheduleRecord, row) for row in rows]

    def claim_schedule_run(
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

    def skip_run(self, run_id: int, reason: str) -> None:
        """Record a created run as skipped after all (its study could not be created)."""
        with self._session() as session:
            session.execute(
                update(ScheduleRun)
                .where(ScheduleRun.id == run_id, ScheduleRun.study_id.is_(None))
                .values(state="skipped", reason=reason)
            )

    def attach_run_study(self, run_id: int, study_id: str) -> None:
        """Link a created schedule run to its study."""
        with self._session() as session:
            session.execute(
                update(ScheduleRun)
                .where(ScheduleRun.id == run_id, ScheduleRun.study_id.is_(None))
                .values(study_id=study_id)
            )

    def schedule_runs(self, schedule_id: int, limit: int | None = None) -> list[ScheduleRunRecord]:
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
        """The schedule's newest run that created (or is to create) a study."""
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

    # --- what a running study reports --------------------------------------------------

    def record_range_test_points(
        self, study_id: str, points: Sequence[events.RangeTestPoint]
    ) -> None:
        """Store range test points; a point already stored is kept as it is."""
        if not points:
            return
        rows = [_point_row(p, study_id=study_id) for p in points]
        with self._session() as session:
            insert = _insert(session, RangeTestPoint)
            session.execute(insert.on_conflict_do_nothing(), rows)

    def record_range_test_end(
        self, study_id: str, stopped_at: int, stop_reason: str, node_id: str | None = None
    ) -> None:
        self._update_study(
            study_id,
            {
                "range_test_stopped_at": stopped_at,
                "range_test_stop_reason": stop_reason,
                "range_test_node_id": node_id,
            },
        )

    def record_plan(
        self,
        study_id: str,
        iterations_per_epoch: int,
        trials: Sequence[events.PlannedTrial],
        tuning: Sequence[events.PlannedTuning] = (),
    ) -> None:
        """Create the study's trials, pending, and note its tuned arms' planned searches, so
        that progress totals are known; trials that exist already (the driver started again)
        are left as they are, and a search already started keeps what it recorded."""
        rows = [{"study_id": study_id, "state": "pending", **asdict(t)} for t in trials]
        with self._session() as session:
            session.execute(
                update(Study)
                .where(Study.id == study_id)
                .values(iterations_per_epoch=iterations_per_epoch)
            )
            if rows:
                session.execute(_insert(session, Trial).on_conflict_do_nothing(), rows)
            if tuning:
                summary = self._tuning_for_update(session, study_id)
                for planned in tuning:
                    entry = summary.setdefault(planned.arm, _planned_tuning())
                    entry.update(
                        trials_planned=planned.trials, max_iterations=planned.max_iterations
                    )
                self._set_tuning(session, study_id, summary)

    def record_bounds(self, study_id: str, bounds: dict[str, Any]) -> None:
        """The bounds the range test suggested: base_lr, max_lr, method, reason."""
        self._update_study(study_id, {"bounds": bounds})

    def record_arms(self, study_id: str, arms: dict[str, Any]) -> None:
        """Every arm as it trains, "auto" resolved (results.json's "arms")."""
        self._update_study(study_id, {"resolved_arms": arms})

    def upsert_trial_started(
        self,
        study_id: str,
        trial_id: str,
        arm: str,
        seed: int,
        iterations: int,
        node_id: str | None = None,
    ) -> None:
        """Mark a trial running, creating it if needed; a resumed trial keeps its start time."""
        now = utcnow()
        with self._session() as session:
            insert = _insert(session, Trial).values(
                study_id=study_id,
                trial_id=trial_id,
                arm=arm,
                seed=seed,
                iterations=iterations,
                iterations_done=0,
                state="running",
                node_id=node_id,
                started_at=now,
            )
            table = Trial.__table__.c
            session.execute(
                insert.on_conflict_do_update(
                    index_elements=[table.study_id, table.trial_id],
                    set_={
                        "state": "running",
                        "iterations": iterations,
                        "node_id": node_id,
                        "started_at": func.coalesce(table.started_at, insert.excluded.started_at),
                    },
                )
            )

    def _trial_pk(self, session: Session, study_id: str, trial_id: str) -> int:
        pk = session.scalar(
            select(Trial.id).where(Trial.study_id == study_id, Trial.trial_id == trial_id)
        )
        if pk is None:
            raise ValueError(f"trial_id {trial_id!r} is not a trial of study {study_id}")
        return pk

    def record_eval_points(
        self, study_id: str, trial_id: str, points: Sequence[events.EvalPoint]
    ) -> None:
        """Store a batch of evaluation points in one statement; points already stored (a
        resumed trial reporting again) are kept as they are."""
        if not points:
            return
        with self._session() as session:
            pk = self._trial_pk(session, study_id, trial_id)
            rows = [_point_row(p, trial_pk=pk) for p in points]
            session.execute(_insert(session, EvalPoint).on_conflict_do_nothing(), rows)
            latest = max(p.iteration for p in points)
            session.execute(
                update(Trial)
                .where(Trial.id == pk, Trial.iterations_done < latest)
                .values(iterations_done=latest)
            )

    def record_trial_end(
        self,
        study_id: str,
        trial_id: str,
        state: str,
        iterations_done: int,
        wall_s: float,
        error: str | None = None,
        node_id: str | None = None,
    ) -> None:
        _check_one_of("state", state, ENDED_TRIAL_STATES)
        values: dict[str, Any] = {
            "state": state,
            "iterations_done": iterations_done,
            "wall_s": wall_s,
            "error": error,
            "ended_at": utcnow(),
        }
        if node_id is not None:
            values["node_id"] = node_id
        with self._session() as session:
            pk = self._trial_pk(session, study_id, trial_id)
            session.execute(update(Trial).where(Trial.id == pk).values(**values))

    # --- tuned arms' searches ----------------------------------------------------------

    def _tuning_for_update(self, session: Session, study_id: str) -> dict[str, Any]:
        """A copy of the study's tuning summary, its row locked until the session ends."""
        study = session.get(Study, study_id, with_for_update=True)
        if study is None:
            raise ValueError(f"no study {study_id}")
        # A deep enough copy: the entries are changed, and the JSON column sees only a new
        # value assigned, never changes made inside the old one.
        return {arm: dict(entry) for arm, entry in (study.tuning or {}).items()}

    def _set_tuning(self, session: Session, study_id: str, summary: dict[str, Any]) -> None:
        session.execute(update(Study).where(Study.id == study_id).values(tuning=summary))

    def record_tuning_started(self, study_id: str, event: events.TuningStarted) -> None:
        """A tuned arm's search began (or began again after a restart: its trials and best so
        far are kept)."""
        with self._session() as session:
            summary = self._tuning_for_update(session, study_id)
            entry = summary.setdefault(event.arm, _planned_tuning())
            entry.update(
                optuna_study=event.optuna_study,
                trials_planned=event.trials,
                max_iterations=event.max_iterations,
                space=event.space,
            )
            self._set_tuning(session, study_id, summary)

    def record_tuning_trial_end(self, study_id: str, event: events.TuningTrialEnded) -> None:
        """Store an ended tuning trial; the same (arm, number) again replaces it (keeping its
        node when the new report names none)."""
        _check_one_of("state", event.state, TUNING_TRIAL_STATES)
        values = {
            **asdict(event),
            "value": finite(event.value),
            "wall_s": finite(event.wall_s),
            "ended_at": utcnow(),
        }
        with self._session() as session:
            insert = _insert(session, TuningTrial).values(study_id=study_id, **values)
            table = TuningTrial.__table__.c
            key = ("study_id", "arm", "number")
            session.execute(
                insert.on_conflict_do_update(
                    index_elements=[table[name] for name in key],
                    set_={
                        **{name: insert.excluded[name] for name in values if name not in key},
                        # A restarted search reports its earlier trials again, without nodes.
                        "node_id": func.coalesce(insert.excluded.node_id, table.node_id),
                    },
                )
            )

    def record_tuning_end(self, study_id: str, event: events.TuningEnded) -> None:
        """A tuned arm's search ended: its best trial, whose params the final trials use."""
        with self._session() as session:
            summary = self._tuning_for_update(session, study_id)
            entry = summary.setdefault(event.arm, _planned_tuning())
            entry["best"] = {
                "number": event.best_number,
                "params": event.best_params,
                "value": event.best_value,
            }
            self._set_tuning(session, study_id, summary)

    def tuning(self, study_id: str) -> dict[str, Any]:
        """results.json's "tuning" section of the study: {} when no arm is tuned."""
        with self._session() as session:
            study = session.get(Study, study_id)
            if study is None:
                return {}
            return self._tuning_section(session, study)

    def _tuning_section(self, session: Session, study: Study) -> dict[str, Any]:
        summary: dict[str, Any] = study.tuning or {}
        trials: dict[str, list[dict[str, Any]]] = {arm: [] for arm in summary}
        for row in session.scalars(
            select(TuningTrial)
            .where(TuningTrial.study_id == study.id)
            .order_by(TuningTrial.arm, TuningTrial.number)
        ):
            trials.setdefault(row.arm, []).append(_columns(row, TUNING_TRIAL_FIELDS))
        return {
            arm: {**(summary.get(arm) or _planned_tuning()), "trials": arm_trials}
            for arm, arm_trials in trials.items()
        }

    # --- reading results ---------------------------------------------------------------

    def trials(self, study_id: str) -> list[TrialRecord]:
        """The study's trials in the order they were created."""
        with self._session() as session:
            rows = session.scalars(
                select(Trial).where(Trial.study_id == study_id).order_by(Trial.id)
            )
            return [_record(TrialRecord, t) for t in rows]

    def progress(self, study_id: str) -> Progress:
        ended = Trial.state.in_(ENDED_TRIAL_STATES)
        with self._session() as session:
            done, total, iterations_done, iterations_total = session.execute(
                select(
                    func.count().filter(ended),
                    func.count(),
                    func.sum(case((ended, Trial.iterations), else_=Trial.iterations_done)),
                    func.sum(Trial.iterations),
                ).where(Trial.study_id == study_id)
            ).one()
            best = session.execute(
                select(Trial.arm, func.max(EvalPoint.accuracy))
                .join(EvalPoint, EvalPoint.trial_pk == Trial.id)
                .where(Trial.study_id == study_id)
                .group_by(Trial.arm)
            ).all()
            tuning_done = session.scalar(
                select(func.count()).where(
                    TuningTrial.study_id == study_id,
                    TuningTrial.state.in_(COUNTED_TUNING_TRIAL_STATES),
                )
            )
            summary = session.scalar(select(Study.tuning).where(Study.id == study_id)) or {}
        return Progress(
            trials_done=done,
            trials_total=total,
            iterations_done=iterations_done or 0,
            iterations_total=iterations_total or 0,
            best_accuracy={arm: accuracy for arm, accuracy in best},
            tuning_trials_done=tuning_done or 0,
            tuning_trials_total=sum(e.get("trials_planned") or 0 for e in summary.values()),
        )

    def results_digest(self, study_id: str) -> str | None:
        """A SHA-256 of everything the study's results document is built from (None: no
        such study): any write about the study changes it. Points are never changed once
        stored, so their count and newest id stand for them."""
        with self._session() as session:
            study = session.get(Study, study_id)
            if study is None:
                return None
            trials = session.execute(
                select(
                    Trial.trial_id, Trial.state, Trial.iterations, Trial.iterations_done,
                    Trial.wall_s, Trial.error, Trial.node_id, Trial.started_at, Trial.ended_at,
                ).where(Trial.study_id == study_id).order_by(Trial.id)
            ).all()  # fmt: skip
            points = session.execute(
                select(func.count(), func.max(EvalPoint.id))
                .join(Trial, EvalPoint.trial_pk == Trial.id)
                .where(Trial.study_id == study_id)
            ).one()
            range_points = session.execute(
                select(func.count(), func.max(RangeTestPoint.id)).where(
                    RangeTestPoint.study_id == study_id
                )
            ).one()
            tuning_trials = session.execute(
                select(
                    func.count(), func.max(TuningTrial.id), func.max(TuningTrial.ended_at)
                ).where(TuningTrial.study_id == study_id)
            ).one()
            parts = [
                _columns(study, StudyRecord.__dataclass_fields__),
                study.tuning,
                [list(t) for t in trials],
                list(points),
                list(range_points),
                list(tuning_trials),
            ]
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def cached_report(self, study_id: str, version: int, digest: str) -> dict[str, Any] | None:
        """The report cached for the study in this format, if built from results with this
        digest."""
        with self._session() as session:
            row = session.get(ReportCache, (study_id, version))
            if row is None or row.results_digest != digest:
                return None
            return row.report

    def cache_report(
        self, study_id: str, version: int, digest: str, report: dict[str, Any]
    ) -> None:
        """Keep the report built from results with `digest` (replacing an older one)."""
        values = {"results_digest": digest, "report": report, "created_at": utcnow()}
        with self._session() as session:
            insert = _insert(session, ReportCache).values(
                study_id=study_id, format_version=version, **values
            )
            table = ReportCache.__table__.c
            try:
                session.execute(
                    insert.on_conflict_do_update(
                        index_elements=[table.study_id, table.format_version], set_=values
                    )
                )
            except IntegrityError:  # the study was deleted meanwhile
                session.rollback()

    def results(self, study_id: str) -> dict[str, Any] | None:
        """The study's results document (docs/results-format.md), or None if unknown."""
        with self._session() as session:
            study = session.get(Study, study_id)
            if study is None:
                return None
            range_points = session.scalars(
                select(RangeTestPoint)
                .where(RangeTestPoint.study_id == study_id)
                .order_by(RangeTestPoint.iteration)
            ).all()
            trials = session.scalars(
                select(Trial).where(Trial.study_id == study_id).order_by(Trial.id)
            ).all()
            points: dict[int, list[dict[str, Any]]] = {t.id: [] for t in trials}
            for p in session.scalars(
                select(EvalPoint)
                .join(Trial, EvalPoint.trial_pk == Trial.id)
                .where(Trial.study_id == study_id)
                .order_by(EvalPoint.trial_pk, EvalPoint.iteration)
            ):
                points[p.trial_pk].append(_columns(p, EVAL_POINT_FIELDS))
            tuning = self._tuning_section(session, study)
        wall_s = None
        if study.started_at and study.finished_at:
            wall_s = (study.finished_at - study.started_at).total_seconds()
        # The rows as the records `clrstudy run`'s document is folded into, and one builder.
        return results_document(
            study.spec,
            study_id=study.id,
            status=study.status,
            error=study.error,
            started_at=_iso(study.started_at),
            finished_at=_iso(study.finished_at),
            wall_s=wall_s,
            iterations_per_epoch=study.iterations_per_epoch,
            range_test=RangeTestEntry(
                [_columns(p, RANGE_POINT_FIELDS) for p in range_points],
                study.range_test_stopped_at,
                study.range_test_stop_reason,
                study.range_test_node_id,
            ),
            bounds=study.bounds,
            arms=study.resolved_arms or {},
            tuning=tuning,
            trials=[
                TrialEntry(**_columns(t, RESULT_TRIAL_FIELDS), points=points[t.id]) for t in trials
            ],
        )
