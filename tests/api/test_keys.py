"""API keys for admins: the listing with each key's last use, and revoking one at once."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from api.deps import SESSION_COOKIE
from service.store import Store
from tests.api.test_pages import login

KEYS = "/api/v1/keys"
Headers = dict[str, str]


def test_admins_list_keys_with_their_last_use(
    client: TestClient, store: Store, alice: Headers, admin: Headers
) -> None:
    record, key = store.create_api_key("carol")
    listed = client.get(KEYS, headers=admin)
    assert listed.status_code == 200
    carol = next(k for k in listed.json() if k["id"] == record.id)
    assert carol["owner"] == "carol" and carol["prefix"] == key[:12]
    assert carol["admin"] is False and carol["last_used_at"] is None
    assert carol["revoked_at"] is None and key not in listed.text
    client.get("/api/v1/studies", headers={"Authorization": f"Bearer {key}"})
    carol = next(k for k in client.get(KEYS, headers=admin).json() if k["id"] == record.id)
    assert carol["last_used_at"] is not None
    assert client.get(KEYS, headers=alice).status_code == 403
    assert client.delete(f"{KEYS}/{record.id}", headers=alice).status_code == 403
    assert client.get(KEYS).status_code == 401


def test_a_revoked_key_is_refused_at_once_its_sessions_end_and_its_studies_stay(
    client: TestClient, store: Store, admin: Headers, submit: Any
) -> None:
    record, key = store.create_api_key("carol")
    carol = {"Authorization": f"Bearer {key}"}
    study = submit(carol)["id"]
    login(client, key)
    assert client.get("/api/v1/studies").status_code == 200  # the browser session
    cookies = dict(client.cookies)
    client.cookies.clear()

    assert client.delete(f"{KEYS}/{record.id}", headers=admin).status_code == 204
    assert client.get("/api/v1/studies", headers=carol).status_code == 401
    client.cookies.set(SESSION_COOKIE, cookies[SESSION_COOKIE])
    assert client.get("/api/v1/studies").status_code == 401
    client.cookies.clear()
    assert client.get(f"/api/v1/studies/{study}", headers=admin).json()["status"] == "queued"
    revoked = next(k for k in client.get(KEYS, headers=admin).json() if k["id"] == record.id)
    assert revoked["revoked_at"] is not None
    assert client.delete(f"{KEYS}/{record.id}", headers=admin).status_code == 404
    for bad in ("0", "99999", "abc", "²"):
        assert client.delete(f"{KEYS}/{bad}", headers=admin).status_code in (404, 422)
