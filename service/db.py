"""Engines, the one session scope every database access goes through, and migrations."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

# Our own Alembic version table: Optuna's storage claims the default `alembic_version`
# and refuses a database whose `alembic_version` holds another project's revision.
VERSION_TABLE = "clr_alembic_version"
TABLE_PREFIX = "clr_"
# The `migrations` package, as a package resource that Alembic finds when it migrates:
# migrations sits above service (its env.py imports our models), so service never imports it.
SCRIPT_LOCATION = "migrations:"


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or is too busy to answer (the API answers 503)."""


T = TypeVar("T")


def retrying(call: Callable[[], T], retry_for_s: float) -> T:
    """`call()`, called again while the database is unavailable, with pauses growing from
    0.1 to 5 s, for up to `retry_for_s` seconds; then its DatabaseUnavailable is raised."""
    deadline = time.monotonic() + retry_for_s
    delay = 0.1
    while True:
        try:
            return call()
        except DatabaseUnavailable:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def database_url(url: str | URL) -> URL:
    """The URL with its driver made explicit: PostgreSQL goes through psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # WAL lets the API read while a job driver writes; SQLite leaves foreign keys off.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for a SQLite file (parent directory created) or PostgreSQL."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # timeout: seconds to wait for another writer's lock before giving up
        connect_args = {"timeout": 30.0, **kwargs.pop("connect_args", {})}
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: a restarted PostgreSQL leaves dead connections in the pool.
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def _unavailable(exc: Exception) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@contextmanager
def session_scope(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success, rolled back on error, and always closed.

    Connection failures and lock timeouts surface as `DatabaseUnavailable`.
    """
    session = sessions()
    try:
        yield session
        session.commit()
    except Exception as exc:
        with suppress(Exception):  # the connection may be gone; closing below discards it
            session.rollback()
        if _unavailable(exc):
            reason = getattr(exc, "orig", None) or exc
            raise DatabaseUnavailable(f"database unavailable: {reason}") from exc
        raise
    finally:
        session.close()


def alembic_config(url: str | URL) -> Config:
    """An Alembic configuration for our migrations, built in code (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # An attribute, not a main option: ConfigParser would read a `%` in the URL as
    # interpolation.
    config.attributes["sqlalchemy.url"] = database_url(url)
    return config


def upgrade(url: str | URL) -> None:
    """Bring the database at `url` to the newest schema (`alembic upgrade head`)."""
    try:
        command.upgrade(alembic_config(url), "head")
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc.orig}") from exc


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate looks at our tables only, never at Optuna's (`studies`, `trials`, ...)."""
    return type_ != "table" or (name or "").startswith(TABLE_PREFIX)


def migration_options() -> dict[str, Any]:
    """Options of Alembic's migration context, shared by `migrations/env.py` and tests."""
    # Batch mode lets later revisions alter SQLite tables (SQLite's ALTER TABLE is minimal).
    return {"version_table": VERSION_TABLE, "include_name": include_name, "render_as_batch": True}
