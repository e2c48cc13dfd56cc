"""No file under STORAGE_PATH holds the database password of a tuned study's Optuna storage."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import NullPool, text

from service.db import database_url, make_engine
from tests.conftest import POSTGRES_SKIP_REASON
from tests.factories import tuned_spec
from workers.events import Event
from workers.runner import RunOptions, run_study
from workers.spec import parse_spec

pytestmark = pytest.mark.slow


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def marked_url() -> Iterator[tuple[str, str]]:
    """A PostgreSQL URL of a fresh role whose password is a marker, on a fresh schema."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip(POSTGRES_SKIP_REASON)
    suffix = uuid.uuid4().hex[:12]
    schema, role, marker = f"t_{suffix}", f"r_{suffix}", f"marker{uuid.uuid4().hex}"
    admin = make_engine(base, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
        connection.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{marker}'"))
        connection.execute(text(f"GRANT ALL ON SCHEMA {schema} TO {role}"))
    url = (
        database_url(base)
        .set(username=role, password=marker)
        .update_query_dict({"options": f"-csearch_path={schema}"})
    )
    try:
        yield url.render_as_string(hide_password=False), marker
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            connection.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def test_no_file_under_storage_path_holds_the_database_password(
    tmp_path: Path, ray_address: str, marked_url: tuple[str, str]
) -> None:
    url, marker = marked_url
    body = tuned_spec(iterations=40, eval_every=10)
    body["arms"] = [{**body["arms"][1], "tuning": {**body["arms"][1]["tuning"], "trials": 2}}]
    storage = tmp_path / "ray"
    options = RunOptions(
        storage_path=str(storage),
        ray_address=ray_address,
        experiment="secret",
        max_concurrent_trials=1,
        tuning_storage=url,
        tuning_study_prefix="secret",
    )
    assert run_study(parse_spec(body), Collector(), options).status == "succeeded"
    files = [path for path in storage.rglob("*") if path.is_file()]
    assert any(path.name.startswith("searcher-state-") for path in files)  # Ray pickled it
    holding = [str(path) for path in files if marker.encode() in path.read_bytes()]
    assert holding == []
