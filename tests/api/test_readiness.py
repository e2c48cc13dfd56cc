"""/readyz tells anonymous callers whether the service can serve, and nothing about where."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from service.ray_cluster import free_port
from tests.api.conftest import SettingsFor


def test_an_unreachable_ray_is_503_without_the_dashboard_address(
    db_url: str, settings_for: SettingsFor
) -> None:
    dashboard = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(db_url, ray_address="ray-head:6380", ray_dashboard_url=dashboard)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": "ok", "ray": "unreachable"}
    assert "127.0.0.1" not in ready.text
