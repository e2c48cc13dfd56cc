"""A failed study's full log is for admins: its owner reads a clean `error` only."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from service.store import Store

Headers = dict[str, str]


def test_only_admins_read_a_failed_studys_error_detail(
    client: TestClient, store: Store, alice: Headers, admin: Headers, submit: Any
) -> None:
    study_id = submit(alice)["id"]
    assert store.transition(study_id, "running", expected={"queued"})
    log = 'Traceback (most recent call last):\n  File "/srv/clrstudy/workers/x.py"\nOOM'
    assert store.transition(
        study_id, "failed", expected={"running"}, error="its Ray job ended", error_detail=log
    )
    path = f"/api/v1/studies/{study_id}"
    owner_view = client.get(path, headers=alice).json()
    assert (owner_view["error"], owner_view["error_detail"]) == ("its Ray job ended", None)
    assert client.get(path, headers=admin).json()["error_detail"] == log
    listed = client.get("/api/v1/studies", headers=admin).json()["items"]
    assert [s["error_detail"] for s in listed] == [log]
    assert client.get("/api/v1/studies", headers=alice).json()["items"][0]["error_detail"] is None
