"""The schedules API on a real database: CRUD, validation, ownership, history and its page."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.scheduling import Scheduler
from service.settings import Settings
from service.store import Store
from tests.api.conftest import run_to_success, strict_json
from tests.factories import SPEC

SCHEDULES = "/api/v1/schedules"


def body(**changes: Any) -> dict[str, Any]:
    values = {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "spec": SPEC}
    return values | changes


def create(client: TestClient, headers: dict[str, str], **changes: Any) -> dict[str, Any]:
    response = client.post(SCHEDULES, json=body(**changes), headers=headers)
    assert response.status_code == 201, response.text
    schedule: dict[str, Any] = response.json()
    return schedule


def test_create_read_update_delete(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], admin: dict[str, str]
) -> None:
    response = client.post(SCHEDULES, json=body(), headers=alice)
    assert response.status_code == 201, response.text
    schedule = response.json()
    path = f"{SCHEDULES}/{schedule['id']}"
    assert response.headers["Location"] == schedule["links"]["self"] == path
    assert schedule["enabled"] is True and schedule["spec"]["seeds"] == [0, 1]
    next_run = datetime.fromisoformat(schedule["next_run_at"])
    assert next_run.utcoffset() == timedelta(0) and next_run.hour in (0, 1)  # 02:00 Berlin
    assert schedule["points_threshold"] == 2.0 and schedule["iterations_fraction"] == 0.25
    create(client, bob, name="bob's")
    assert [s["name"] for s in client.get(SCHEDULES, headers=alice).json()] == ["nightly"]
    assert len(client.get(SCHEDULES, headers=admin).json()) == 2
    shown = client.get(path, headers=alice).json()
    assert shown["regression"] is None and shown["latest"] is None

    changed = client.patch(
        path, json={"cron": "30 4 * * 1", "timezone": "UTC", "enabled": False}, headers=alice
    )
    assert changed.status_code == 200, changed.text
    updated = changed.json()
    assert [updated[k] for k in ("cron", "timezone", "enabled")] == ["30 4 * * 1", "UTC", False]
    next_run = datetime.fromisoformat(updated["next_run_at"])
    assert (next_run.weekday(), next_run.hour, next_run.minute) == (0, 4, 30)
    assert (
        client.patch(path, json={"iterations_fraction": 0.5}, headers=alice).json()[
            "iterations_fraction"
        ]
        == 0.5
    )

    assert client.delete(path, headers=alice).status_code == 204
    assert client.get(path, headers=alice).status_code == 404


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron": "0 2 * *"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"name": "x" * 81}, "name"),
        ({"iterations_fraction": -1}, "iterations_fraction"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(
    client: TestClient, alice: dict[str, str], changes: dict[str, Any], field: str
) -> None:
    response = client.post(SCHEDULES, json=body(**changes), headers=alice)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", field]]
    schedule = create(client, alice)
    patched = client.patch(f"{SCHEDULES}/{schedule['id']}", json=changes, headers=alice)
    assert patched.status_code == 422 and patched.json()["detail"][0]["loc"] == ["body", field]


def test_non_finite_numbers_in_a_schedule_body_are_422(
    client: TestClient, alice: dict[str, str]
) -> None:
    headers = {**alice, "Content-Type": "application/json"}
    schedule = create(client, alice)
    for changes, loc in (
        ({"points_threshold": float("nan")}, ["body", "points_threshold"]),
        ({"iterations_fraction": float("inf")}, ["body", "iterations_fraction"]),
        ({"spec": {**SPEC, "epochs": float("inf")}}, ["body", "spec", "epochs"]),
    ):
        for method, path, payload in (
            ("POST", SCHEDULES, body(name="n2", **changes)),
            ("PATCH", f"{SCHEDULES}/{schedule['id']}", changes),
        ):
            response = client.request(method, path, content=json.dumps(payload), headers=headers)
            assert response.status_code == 422, (method, changes, response.text)
            assert strict_json(response.text)["detail"][0]["loc"] == loc
    assert [s["name"] for s in client.get(SCHEDULES, headers=alice).json()] == ["nightly"]


def test_an_owner_may_have_max_schedules_per_owner(
    client: TestClient, alice: dict[str, str]
) -> None:
    for i in range(10):  # the default limit
        create(client, alice, name=f"n{i}")
    refused = client.post(SCHEDULES, json=body(name="n10"), headers=alice)
    assert refused.status_code == 429
    assert "MAX_SCHEDULES_PER_OWNER=10" in refused.json()["detail"]
    assert len(client.get(SCHEDULES, headers=alice).json()) == 10


def test_history_shows_at_most_100_runs(client: TestClient, alice: dict[str, str]) -> None:
    path = f"{SCHEDULES}/{create(client, alice)['id']}"
    for suffix in ("/history", "/page.html"):
        assert client.get(f"{path}{suffix}?limit=100", headers=alice).status_code == 200
        too_many = client.get(f"{path}{suffix}?limit=101", headers=alice)
        assert too_many.status_code == 422
        assert too_many.json()["detail"][0]["loc"] == ["query", "limit"]


def test_the_template_is_validated_with_the_servers_limits(
    client: TestClient, alice: dict[str, str]
) -> None:
    response = client.post(SCHEDULES, json=body(spec={**SPEC, "seeds": 9}), headers=alice)
    assert response.status_code == 422  # the test settings allow 4 seeds
    assert response.json()["detail"][0]["loc"][:3] == ["body", "spec", "seeds"]
    schedule = create(client, alice)
    patched = client.patch(
        f"{SCHEDULES}/{schedule['id']}", json={"spec": {**SPEC, "batch_size": 0}}, headers=alice
    )
    assert patched.status_code == 422
    assert patched.json()["detail"][0]["loc"][:3] == ["body", "spec", "batch_size"]
    nulled = client.patch(f"{SCHEDULES}/{schedule['id']}", json={"name": None}, headers=alice)
    assert nulled.status_code == 422 and nulled.json()["detail"][0]["loc"] == ["body", "name"]


def test_names_are_unique_per_owner(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    first = create(client, alice)
    again = client.post(SCHEDULES, json=body(), headers=alice)
    assert again.status_code == 409 and "nightly" in again.json()["detail"]
    create(client, bob)  # another owner may use the name
    other = create(client, alice, name="weekly")
    renamed = client.patch(f"{SCHEDULES}/{other['id']}", json={"name": "nightly"}, headers=alice)
    assert renamed.status_code == 409
    assert client.get(f"{SCHEDULES}/{first['id']}", headers=alice).json()["name"] == "nightly"


def test_foreign_and_malformed_ids_are_404(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], admin: dict[str, str]
) -> None:
    path = f"{SCHEDULES}/{create(client, alice)['id']}"
    for method, suffix in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/history"),
        ("GET", "/page.html"),
    ):
        kwargs: dict[str, Any] = {"json": {"enabled": False}} if method == "PATCH" else {}
        response = client.request(method, path + suffix, headers=bob, **kwargs)
        assert response.status_code == 404, (method, suffix)
    # "²" and "¹" are digits to str.isdigit(), not to int(); "١" (Arabic one) is to both.
    for malformed in ("abc", "99999999999999", "²", "¹", "١", "1²", "%00"):
        for method, suffix in (("GET", ""), ("GET", "/history"), ("GET", "/page.html")):
            response = client.request(method, f"{SCHEDULES}/{malformed}{suffix}", headers=alice)
            assert response.status_code == 404, (malformed, suffix)
        response = client.patch(f"{SCHEDULES}/{malformed}", json={"enabled": False}, headers=alice)
        assert response.status_code == 404
        assert client.delete(f"{SCHEDULES}/{malformed}", headers=alice).status_code == 404
    assert client.get(path, headers=admin).status_code == 200  # admins see every schedule
    assert client.get(path, headers=alice).json()["enabled"] is True  # bob changed nothing
    assert client.get(SCHEDULES).status_code == 401


def test_history_and_page_show_each_run_and_flag_regressions(
    client: TestClient, store: Store, settings: Settings, alice: dict[str, str]
) -> None:
    schedule = create(client, alice, name="digits <nightly>")
    scheduler = Scheduler(store, settings)
    first_due = datetime.fromisoformat(schedule["next_run_at"])

    def night(n: int) -> Any:
        (run,) = scheduler.tick(first_due + timedelta(days=n, minutes=1))
        return run

    run_to_success(store, night(0).study_id, 1.0)
    second = night(1)
    assert store.transition(second.study_id, "running", expected={"queued"})
    assert night(2).state == "skipped"  # the second night's study still runs
    assert store.transition(second.study_id, "failed", expected={"running"}, error="boom")
    run_to_success(store, night(3).study_id, 0.9)  # triangular ends 10% lower
    path = f"{SCHEDULES}/{schedule['id']}"

    response = client.get(f"{path}/history", headers=alice)
    assert response.status_code == 200, response.text
    runs = response.json()["runs"]
    assert [(r["state"], r["study_status"]) for r in runs] == [
        ("created", "succeeded"),
        ("skipped", None),
        ("created", "failed"),
        ("created", "succeeded"),
    ]
    assert "still running" in runs[1]["reason"]
    newest, oldest = runs[0], runs[-1]
    assert newest["comparison"]["previous_study_id"] == oldest["study_id"]
    assert newest["comparison"]["regression"] is True
    deltas = {a["arm"]: a for a in newest["comparison"]["arms"]}
    assert deltas["triangular"]["regression"] and not deltas["fixed"]["regression"]
    assert deltas["triangular"]["final_accuracy_delta_points"] == pytest.approx(-9.5, abs=0.1)
    figures = {a["arm"]: a for a in newest["arms"]}
    assert figures["triangular"]["final_accuracy"] == pytest.approx(0.855, abs=0.001)
    assert figures["fixed"]["speedup"] == pytest.approx(1.0)
    assert {"iterations_to_target", "ci_low", "ci_high"} <= figures["fixed"].keys()

    shown = client.get(path, headers=alice).json()
    assert shown["regression"] is True and shown["latest"]["study_id"] == newest["study_id"]

    page = client.get(f"{path}/page.html", headers=alice)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "<svg" in html and 'id="history"' in html and 'id="regression"' in html
    assert html.count('class="regression"') == 1  # triangular in the newest run
    assert "digits &lt;nightly&gt;" in html and "<nightly>" not in html
    assert "src=" not in html and "<link" not in html  # self-contained

    # Deleting the schedule keeps its studies.
    assert client.delete(path, headers=alice).status_code == 204
    for study_id in (r["study_id"] for r in runs if r["study_id"]):
        assert client.get(f"/api/v1/studies/{study_id}", headers=alice).status_code == 200
