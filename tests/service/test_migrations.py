"""The migrations build exactly the models' schema, in tables of our own."""

from __future__ import annotations

import optuna
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import IntegrityError

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
        assert versions.scalars().all() == ["0006_error_detail"]


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


def test_upgrading_a_database_with_studies_and_optuna_keeps_both(db_url: str) -> None:
    """0003 recreates clr_studies on SQLite: its trials, points and Optuna's data survive."""
    command.upgrade(alembic_config(db_url), "0002_schedules")
    engine = make_engine(db_url)
    storage = optuna.storages.RDBStorage(db_url)  # Optuna's tables beside ours
    try:
        optuna.create_study(storage=storage, study_name="clrstudy-s1/fixed").add_trial(
            optuna.trial.create_trial(params={"lr": 0.1}, distributions=LR, value=0.9)
        )
        with engine.begin() as connection:
            for statement in OLD_ROWS:
                connection.execute(text(statement))
        upgrade(db_url)
        assert schema_differences(engine) == []
        with engine.begin() as connection:
            assert counts(connection) == (1, 1, 1, 1)
            # The new phase is admitted, and the table's other checks are still there.
            connection.execute(text("UPDATE clr_studies SET phase = 'tuning'"))
        for bad in ("phase = 'tune'", "status = 'paused'"):
            with pytest.raises(IntegrityError), engine.begin() as connection:
                connection.execute(text(f"UPDATE clr_studies SET {bad}"))
        loaded = optuna.load_study(study_name="clrstudy-s1/fixed", storage=storage)
        assert [t.params for t in loaded.trials] == [{"lr": 0.1}]

        command.downgrade(alembic_config(db_url), "0002_schedules")
        with engine.begin() as connection:
            assert counts(connection) == (1, 1, 1, 1)
            phase = connection.execute(text("SELECT phase FROM clr_studies")).scalar()
            assert phase == "range_test"  # what came before tuning
        assert "clr_tuning_trials" not in inspect(engine).get_table_names()
        assert len(optuna.load_study(study_name="clrstudy-s1/fixed", storage=storage).trials) == 1
    finally:
        storage.remove_session()
        storage.engine.dispose()
        engine.dispose()


LR = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
OLD_ROWS = (
    "INSERT INTO clr_owners (id, name, admin, created_at) "
    "VALUES (1, 'alice', false, '2026-12-01 00:00:00+00')",
    "INSERT INTO clr_studies (id, owner_id, name, spec, status, phase, cancel_requested, "
    "created_at) VALUES ('s1', 1, 'digits', '{}', 'running', 'trials', false, "
    "'2026-12-01 00:00:00+00')",
    "INSERT INTO clr_trials (study_id, trial_id, arm, seed, state, iterations, iterations_done) "
    "VALUES ('s1', 'fixed-s0', 'fixed', 0, 'running', 100, 10)",
    "INSERT INTO clr_eval_points (trial_pk, iteration, epoch, lr, accuracy, elapsed_s) "
    "SELECT id, 10, 0.5, 0.1, 0.8, 1.0 FROM clr_trials",
    "INSERT INTO clr_range_test_points (study_id, iteration, lr) VALUES ('s1', 0, 0.001)",
)


def counts(connection: Connection) -> tuple[int, ...]:
    tables = ("clr_studies", "clr_trials", "clr_eval_points", "clr_range_test_points")
    return tuple(connection.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables)
