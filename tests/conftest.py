"""Fixtures shared by the whole suite: one local Ray head per test session."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "token")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
