"""Fixtures shared by the whole suite: one local Ray head per test session, and `db_url`:
every test that uses it runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from service.db import database_url, make_engine
from service.ray_cluster import free_port

os.environ.setdefault("RAY_AUTH_MODE", "token")


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A local Ray head with the dashboard (Jobs API), started once for the session.

    Started the way the service starts its own (`RayCluster`), on free ports: Redis may
    hold Ray's default 6379.
    """
    from service.ray_cluster import RayCluster
    from service.settings import Settings

    root: Path = tmp_path_factory.mktemp("ray")
    settings = Settings(
        database_url=f"sqlite:///{root / 'unused.db'}",
        ray_head_port=free_port(),
        ray_dashboard_port=free_port(),
        ray_num_cpus=2,
        storage_path=str(root / "results"),
    )
    cluster = RayCluster(settings)
    cluster.start()
    yield cluster
    import ray

    ray.shutdown()
    cluster.stop()


@pytest.fixture(scope="session")
def ray_address(ray_head: object) -> str:
    """Connect this test process to the session's head; the runner's trials run there."""
    from workers.runner import ensure_ray

    address = f"127.0.0.1:{ray_head.settings.ray_head_port}"  # type: ignore[attr-defined]
    ensure_ray(address)
    return address


POSTGRES_SKIP_REASON = (
    "PostgreSQL was NOT run: set TEST_DATABASE_URL "
    "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) to run these tests on it"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'clrstudy.db'}"
        return
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip(POSTGRES_SKIP_REASON)
    # A schema per test, made the connections' search_path: tests never see each other's
    # tables, and dropping the schema removes everything a test created.
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = make_engine(base, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = database_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
