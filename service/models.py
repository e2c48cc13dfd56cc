"""The service's tables (SQLAlchemy 2). All are prefixed `clr_`: Optuna shares the database
and uses generic names (`studies`, `trials`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from workers.states import STUDY_PHASES, STUDY_STATUSES, TRIAL_STATES, TUNING_TRIAL_STATES


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    # Named constraints, so that migrations can refer to them on every backend.
    metadata = MetaData(
        naming_convention={
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class Owner(Base):
    """Who submits studies: the holder of one or more API keys."""

    __tablename__ = "clr_owners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key, stored as its SHA-256 hash.

    The keys are 256-bit random strings, not passwords: guessing one is hopeless whatever the
    hash costs, so a slow hash (bcrypt, argon2) would add latency to every request and no
    protection. The hash is unique, so a key is found by one indexed lookup.
    """

    __tablename__ = "clr_api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("clr_owners.id", ondelete="CASCADE"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # When the key last authenticated a request (bearer or browser session); at most one
    # write a minute per key, so that reads do not turn into writes.
    last_used_at: Mapped[datetime | None]


class BrowserSession(Base):
    """A browser's login: the cookie holds a random id, stored here as its SHA-256 hash.

    It ends at `expires_at`, at logout (the row is deleted) and with its key (revoking the
    key deletes its sessions; a revoked key authenticates nothing anyway).
    """

    __tablename__ = "clr_browser_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("clr_api_keys.id", ondelete="CASCADE"))
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class Study(Base):
    """One comparison request, its lifecycle and the study-wide results."""

    __tablename__ = "clr_studies"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        CheckConstraint(_one_of("status", STUDY_STATUSES), name="status"),
        CheckConstraint(_one_of("phase", STUDY_PHASES), name="phase"),
        Index("ix_clr_studies_owner_created", "owner_id", "created_at"),
        Index("ix_clr_studies_status_created", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID
    owner_id: Mapped[int] = mapped_column(ForeignKey("clr_owners.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="queued")
    phase: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    # What `error` leaves out (the job's log, a traceback with server paths): admins only.
    error_detail: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # SHA-256 of the spec sent with `idempotency_key`: the same key with another body is refused.
    idempotency_body_hash: Mapped[str | None] = mapped_column(String(64))
    submission_id: Mapped[str | None] = mapped_column(String(100))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    bounds: Mapped[dict[str, Any] | None]
    resolved_arms: Mapped[dict[str, Any] | None]
    iterations_per_epoch: Mapped[int | None] = mapped_column(Integer)
    range_test_stopped_at: Mapped[int | None] = mapped_column(Integer)
    range_test_stop_reason: Mapped[str | None] = mapped_column(String(32))
    range_test_node_id: Mapped[str | None] = mapped_column(String(100))
    # Per tuned arm: {"optuna_study", "trials_planned", "max_iterations", "space", "best"}
    # (results.json's "tuning" less its trials, which are rows of clr_tuning_trials).
    tuning: Mapped[dict[str, Any] | None]
    # When CHECKPOINT_RETENTION_DAYS removed the study's checkpoints (its results stay).
    checkpoints_removed_at: Mapped[datetime | None]


class ReportCache(Base):
    """A finished study's comparison report, built once per report format version.

    `results_digest` sums up everything the report is built from (`Store.results_digest`):
    an entry whose digest no longer matches (something was written about the study after
    it ended) is rebuilt, never served.
    """

    __tablename__ = "clr_report_cache"

    study_id: Mapped[str] = mapped_column(
        ForeignKey("clr_studies.id", ondelete="CASCADE"), primary_key=True
    )
    format_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    results_digest: Mapped[str] = mapped_column(String(64))
    report: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Trial(Base):
    """One arm trained with one seed."""

    __tablename__ = "clr_trials"
    __table_args__ = (
        UniqueConstraint("study_id", "trial_id"),
        CheckConstraint(_one_of("state", TRIAL_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("clr_studies.id", ondelete="CASCADE"))
    trial_id: Mapped[str] = mapped_column(String(200))  # f"{arm}-s{seed}"
    arm: Mapped[str] = mapped_column(String(100))
    seed: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    node_id: Mapped[str | None] = mapped_column(String(100))
    iterations: Mapped[int] = mapped_column(Integer)
    iterations_done: Mapped[int] = mapped_column(Integer, default=0)
    wall_s: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class EvalPoint(Base):
    """One evaluation of a trial; unique per iteration, so a resumed trial cannot repeat one.

    Losses are NULL where training diverged to NaN or infinity: SQLite stores NaN as NULL
    anyway, and JSON has no such numbers.
    """

    __tablename__ = "clr_eval_points"
    __table_args__ = (UniqueConstraint("trial_pk", "iteration"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_pk: Mapped[int] = mapped_column(ForeignKey("clr_trials.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    elapsed_s: Mapped[float] = mapped_column(Float)
    # The optimizer's estimated step size (Prodigy, D-Adaptation, DoG); NULL for the others.
    d: Mapped[float | None] = mapped_column(Float)


class RangeTestPoint(Base):
    """One iteration of a study's LR range test."""

    __tablename__ = "clr_range_test_points"
    __table_args__ = (UniqueConstraint("study_id", "iteration"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("clr_studies.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    lr: Mapped[float] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    smoothed_loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    eval_loss: Mapped[float | None] = mapped_column(Float)


class TuningTrial(Base):
    """One trial of a tuned arm's Optuna search, stored when it ended.

    `number` is its Optuna trial number, unique per arm; Optuna's own record of it lives in
    Optuna's tables, in the same database.
    """

    __tablename__ = "clr_tuning_trials"
    __table_args__ = (
        UniqueConstraint("study_id", "arm", "number"),
        CheckConstraint(_one_of("state", TUNING_TRIAL_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("clr_studies.id", ondelete="CASCADE"))
    arm: Mapped[str] = mapped_column(String(100))
    number: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    iterations_done: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)  # validation accuracy, 0..1
    wall_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    node_id: Mapped[str | None] = mapped_column(String(100))
    ended_at: Mapped[datetime] = mapped_column(default=utcnow)


SCHEDULE_RUN_STATES = ("created", "skipped")


class Schedule(Base):
    """A cron rule, in a time zone, that creates a study from a template spec.

    `next_run_at` is the next due time in UTC; a service process claims a due run by moving
    it forward with a conditional UPDATE (see `service.scheduling`).
    """

    __tablename__ = "clr_schedules"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        Index("ix_clr_schedules_enabled_next_run", "enabled", "next_run_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("clr_owners.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64))  # an IANA name, e.g. Europe/Berlin
    spec: Mapped[dict[str, Any]]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    points_threshold: Mapped[float] = mapped_column(Float)  # percentage points
    iterations_fraction: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_run_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]


class ScheduleRun(Base):
    """One due time of a schedule: the study it created, or why it skipped.

    Unique per (schedule, due time): two service processes cannot record the same run.
    """

    __tablename__ = "clr_schedule_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "due_at"),
        CheckConstraint(_one_of("state", SCHEDULE_RUN_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("clr_schedules.id", ondelete="CASCADE"))
    due_at: Mapped[datetime]
    # Deleting a study keeps the run (as one without a study); deleting the schedule does not
    # delete its studies.
    study_id: Mapped[str | None] = mapped_column(ForeignKey("clr_studies.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
