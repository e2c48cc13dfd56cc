"""The migrations build exactly the models' schema, in tables of our own."""

from __future__ import annotations

import optuna
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from service.db import (
    VERSION_TABLE,
    DatabaseUnavailable,
    alembic_config,
    make_engine,
    migration_options,
    upgrade,
)
from service.models import Base


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=migration_options())
        return list(compare_metadata(context, Base.metadata))


def test_upgrade_builds_the_models_schema(engine: Engine) -> None:
    assert schema_differences(engine) == []
    tables = set(inspect(engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} | {VERSION_TABLE} == tables
    assert "alembic_version" not in tables
    with engine.connect() as connection:
        versions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
        assert versions.scalars().all() == ["0002_schedules"]


def test_upgrade_again_changes_nothing_and_downgrade_removes_everything(
    engine: Engine, db_url: str
) -> None:
    upgrade(db_url)
    assert schema_differences(engine) == []
    command.downgrade(alembic_config(db_url), "base")
    assert set(inspect(engine).get_table_names()) == {VERSION_TABLE}


def test_shares_the_database_with_optuna(db_url: str) -> None:
    storage = optuna.storages.RDBStorage(db_url)  # creates Optuna's tables and alembic_version
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert schema_differences(engine) == []  # Optuna's tables are not ours to compare
        assert "alembic_version" in inspect(engine).get_table_names()
        study = optuna.create_study(storage=storage, study_name="shared")
        assert optuna.load_study(study_name="shared", storage=storage)._study_id == study._study_id
    finally:
        storage.remove_session()
        storage.engine.dispose()
        engine.dispose()


def test_unreachable_database_is_reported_as_unavailable() -> None:
    url = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=1"
    with pytest.raises(DatabaseUnavailable, match="database unavailable"):
        upgrade(url)
