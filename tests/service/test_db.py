"""service.db: migrations found without importing them, from a checkout and from an install;
the session scope."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from service.db import (
    VERSION_TABLE,
    DatabaseUnavailable,
    alembic_config,
    database_url,
    make_engine,
    session_factory,
    session_scope,
    upgrade,
)

ROOT = Path(__file__).resolve().parents[2]
# The newest migration of the checkout: each revision id is its file's name.
NEWEST = max(p.stem for p in (ROOT / "migrations" / "versions").glob("[0-9]*.py"))


def _version(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
            return list(rows.scalars())
    finally:
        engine.dispose()


def test_upgrade_reaches_the_newest_revision_from_any_working_folder(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing is found relative to the checkout
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert head == NEWEST
    upgrade(db_url)
    assert _version(db_url) == [head]
    upgrade(db_url)  # again: nothing to do
    assert _version(db_url) == [head]


def test_importing_the_service_imports_neither_migrations_nor_the_layers_above() -> None:
    # Every module of service, in a fresh interpreter: migrations, api and cli sit above it.
    code = (
        "import pkgutil, importlib, sys, service\n"
        "for module in pkgutil.walk_packages(service.__path__, 'service.'):\n"
        "    importlib.import_module(module.name)\n"
        "above = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('migrations', 'api', 'cli'))\n"
        "assert not above, above\n"
        "assert 'service.driver' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_an_installed_copy_has_every_package_and_finds_its_own_migrations(
    tmp_path: Path,
) -> None:
    """A non-editable install (as the Docker image has) ships every layer and the scripts."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("clr", "workers", "service", "api", "migrations", "cli"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--target", str(site), str(source)],
        check=True,
        timeout=300,
    )
    shutil.rmtree(source)  # the install must not lean on the sources
    for package in ("clr", "workers", "service", "api", "migrations", "cli"):
        assert (site / package / "__init__.py").is_file(), package
    (scripts,) = site.glob("clrstudy-*.dist-info/entry_points.txt")
    assert "clrstudy = cli.main:main" in scripts.read_text()
    database = tmp_path / "installed.db"
    code = (
        "import sys, service.db\n"
        f"assert service.db.__file__.startswith({str(site)!r}), service.db.__file__\n"
        f"service.db.upgrade('sqlite:///{database}')\n"
        "print(sys.modules['migrations'].__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(site / "migrations" / "__init__.py")
    assert _version(f"sqlite:///{database}") == [NEWEST]


def test_postgres_urls_go_through_psycopg_3() -> None:
    assert database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("sqlite:///x.db").drivername == "sqlite"


def test_a_sqlite_file_gets_its_folder_and_write_ahead_logging(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'folder' / 'c.db'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()
    assert (tmp_path / "new" / "folder" / "c.db").is_file()


def test_session_scope_commits_on_success_and_rolls_back_on_error(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE clr_scope_test (n INTEGER)"))
        sessions = session_factory(engine)
        with session_scope(sessions) as session:
            session.execute(text("INSERT INTO clr_scope_test VALUES (1)"))
        with pytest.raises(KeyError), session_scope(sessions) as session:
            session.execute(text("INSERT INTO clr_scope_test VALUES (2)"))
            raise KeyError("not a database error: raised as it is")
        with session_scope(sessions) as session:
            rows = session.execute(text("SELECT n FROM clr_scope_test")).scalars().all()
        assert rows == [1]
    finally:
        engine.dispose()


def test_session_scope_reports_an_unreachable_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gone.db'}")
    (tmp_path / "gone.db").mkdir()  # a folder where the file should be: cannot open
    try:
        with (
            pytest.raises(DatabaseUnavailable, match="database unavailable"),
            session_scope(session_factory(engine)) as session,
        ):
            session.execute(text("SELECT 1"))
    finally:
        engine.dispose()
