"""The browser entry point: login with the API key into a server-side session, the list of
studies, changes only from the service's own pages, and the headers every response carries."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.deps import SESSION_COOKIE
from api.main import create_app
from service.ray_cluster import free_port
from service.reports.page import STYLESHEET
from service.reports.study_page import REFRESH_S
from service.settings import Settings
from service.sinks import DatabaseSink
from service.store import Store
from tests.api.conftest import PLANNED, bearer, new_key, run_events
from tests.browser import chromium
from tests.factories import study_spec

Headers = dict[str, str]
SAME_ORIGIN = {"Origin": "http://testserver"}  # what a browser sends from the page
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}
FORM = {**FORM_TYPE, **SAME_ORIGIN}  # a form posted from the service's own page


def login(client: TestClient, key: str) -> Any:
    return client.post(
        "/login",
        content=f"api_key={key}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )


def test_without_a_session_the_page_is_a_login_form(
    client: TestClient, alice: Headers, submit: Any
) -> None:
    submit(alice, name="secret study")
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="login"' in page.text and 'type="password"' in page.text
    assert "secret study" not in page.text
    assert "<link" not in page.text and "<script" not in page.text  # self-contained
    assert page.text.count(STYLESHEET) == 1  # the one shell every page shares


def test_login_sets_an_httponly_strict_cookie_and_lists_only_the_owners_studies(
    client: TestClient, store: Store, bob: Headers, submit: Any
) -> None:
    _, key = store.create_api_key("alice")
    mine = submit({"Authorization": f"Bearer {key}"}, name="alice <b>study</b>")
    submit(bob, name="bob's study")

    response = login(client, key)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert key not in response.headers["location"]

    page = client.get("/")
    assert "alice &lt;b&gt;study&lt;/b&gt;" in page.text  # escaped
    assert "bob's study" not in page.text
    assert f'href="/api/v1/studies/{mine["id"]}/report.html"' in page.text
    assert "queued" in page.text and "0/0 trials" in page.text
    # The cookie opens the API as the header would.
    listed = client.get("/api/v1/studies").json()
    assert [s["id"] for s in listed["items"]] == [mine["id"]]


def test_the_report_page_opens_with_the_cookie(
    client: TestClient, store: Store, trained_study: str
) -> None:
    _, key = store.create_api_key("alice")  # the owner of trained_study
    login(client, key)
    report = client.get(f"/api/v1/studies/{trained_study}/report.html")
    assert report.status_code == 200 and "<svg" in report.text


def test_a_bad_key_or_form_is_refused_without_a_cookie(client: TestClient) -> None:
    for body in ("api_key=clr_wrong", "", "api_key=", "%%%&&&=", "api_key=\u00e9\u0000"):
        response = client.post(
            "/login",
            content=body.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            follow_redirects=False,
        )
        assert response.status_code == 401, body
        assert "not valid" in response.text
        assert "set-cookie" not in response.headers
    assert client.get("/api/v1/studies").status_code == 401


def test_logout_clears_the_session(client: TestClient, store: Store) -> None:
    _, key = store.create_api_key("alice")
    login(client, key)
    assert 'id="login"' not in client.get("/").text
    # Only from the service's own page: another site cannot log its visitors out.
    assert client.post("/logout", headers={"Origin": "https://evil.example"}).status_code == 403
    assert 'id="login"' not in client.get("/").text
    response = client.post("/logout", headers=SAME_ORIGIN, follow_redirects=False)
    assert response.status_code == 303
    assert f'{SESSION_COOKIE}=""' in response.headers["set-cookie"]
    assert 'id="login"' in client.get("/").text
    assert client.get("/api/v1/studies").status_code == 401


def test_the_cookie_holds_a_session_that_logout_ends_on_the_server(
    client: TestClient, store: Store
) -> None:
    _, key = store.create_api_key("alice")
    response = login(client, key)
    session = client.cookies[SESSION_COOKIE]
    assert key not in response.headers["set-cookie"] and len(session) >= 40
    assert "Max-Age=43200" in response.headers["set-cookie"]  # 12 hours
    client.post("/logout", headers=SAME_ORIGIN)
    # The same cookie, kept by a copy of it (a stolen one): the session is gone.
    client.cookies.set(SESSION_COOKIE, session)
    assert client.get("/api/v1/studies").status_code == 401
    assert 'id="login"' in client.get("/").text


def test_changes_by_cookie_must_come_from_the_services_own_pages(
    client: TestClient, store: Store, submit: Any, spec: Any
) -> None:
    _, key = store.create_api_key("alice")
    study = submit({"Authorization": f"Bearer {key}"})["id"]
    login(client, key)
    cancel = f"/api/v1/studies/{study}/cancel"
    for headers in (
        {},  # no Origin, no Sec-Fetch-Site: not a page of ours
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        for method, path, body in (
            ("POST", cancel, None),
            ("POST", "/api/v1/studies", spec()),
            ("POST", "/api/v1/schedules", {}),
            ("DELETE", "/api/v1/schedules/1", None),
        ):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, (headers, method, path)
            assert "Origin or Sec-Fetch-Site" in response.json()["detail"]
    assert client.get(f"/api/v1/studies/{study}").json()["status"] == "queued"
    assert client.get("/api/v1/studies").json()["total"] == 1  # reads need no Origin
    done = client.post(cancel, headers={"Origin": "http://testserver"})
    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    submitted = client.post(
        "/api/v1/studies", json=spec(), headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert submitted.status_code == 202
    # A bearer key is not sent by browsers on their own: no Origin needed.
    client.cookies.clear()
    bearer = client.post("/api/v1/studies", json=spec(), headers={"Authorization": f"Bearer {key}"})
    assert bearer.status_code == 202


def test_every_response_carries_the_security_headers(
    client: TestClient, alice: Headers, trained_study: str
) -> None:
    study = f"/api/v1/studies/{trained_study}"
    responses = {
        path: client.get(path, headers=alice)
        for path in (
            "/",
            "/healthz",
            "/api/v1/studies",
            f"{study}/report.csv",
            f"{study}/report.html",
            "/api/v1/studies/nope",
            "/docs",
        )
    }
    responses["401"] = client.get("/api/v1/studies")
    for path, response in responses.items():
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
    for path in ("/", f"{study}/report.html"):
        policy = responses[path].headers["content-security-policy"]
        assert "default-src 'none'" in policy and "style-src 'unsafe-inline'" in policy
        assert "img-src data:" in policy and "script-src" not in policy
        assert "<script" not in responses[path].text  # nothing the policy would block
    assert "content-security-policy" not in responses["/api/v1/studies"].headers


# ---- a study's page, cancel, schedules ---------------------------------------------------


def running_study(store: Store, submit: Any, headers: Headers) -> str:
    """A running study with its bounds found, one trial ended (triangular, seed 0) and one
    half-way (fixed, seed 0: 30 of its 60 iterations)."""
    study_id: str = submit(headers)["id"]
    assert store.transition(study_id, "running", expected={"queued"})
    store.set_submission_id(study_id, f"clrstudy-{study_id}")
    events = run_events(PLANNED)
    sink = DatabaseSink(store, study_id)
    for event in (*events[:5], *events[5:7], *events[13:17]):  # plan..arms, fixed-s0, tri-s0
        sink.emit(event)
    sink.close()
    return study_id


def session_for(client: TestClient, store: Store, name: str) -> Headers:
    """Log `client` in as a new key of `name`; that key's bearer headers."""
    _, key = store.create_api_key(name)
    login(client, key)
    return {"Authorization": f"Bearer {key}"}


def test_a_running_studys_page_shows_its_progress_and_refreshes(
    client: TestClient, store: Store, submit: Any, settings: Settings
) -> None:
    alice = session_for(client, store, "alice")
    study = running_study(store, submit, alice)
    listing = client.get("/")
    assert f'href="/studies/{study}"' in listing.text
    assert '<meta http-equiv="refresh" content="5">' in listing.text

    page = client.get(f"/studies/{study}")
    assert page.status_code == 200
    text = page.text
    assert '<meta http-equiv="refresh" content="5">' in text
    assert '<b id="status">running</b>' in text
    assert '<span id="trials">1/4</span>' in text
    assert '<span id="iterations">90/240</span>' in text
    assert '<progress id="iterations-bar" value="90" max="240">' in text
    assert "base_lr <b>0.03</b>, max_lr <b>0.1</b>" in text
    # Best so far: fixed-s0 reached 0.1 + 0.01 * 30, triangular-s0 min(0.95, 0.1 + 0.02 * 60).
    assert '<th scope="row">fixed</th><td>40.0%</td>' in text
    assert '<th scope="row">triangular</th><td>95.0%</td>' in text
    assert 'id="plot-accuracy"' in text and 'id="plot-schedule"' in text and "<svg" in text
    path = f"/api/v1/studies/{study}"
    for link in (f"{path}/report.html", f"{path}/report.csv", f'"{path}"'):
        assert link in text
    dashboard = f"http://{settings.ray_dashboard_host}:{settings.ray_dashboard_port}"
    assert f'id="ray-job" href="{dashboard}/#/jobs/clrstudy-{study}"' in text
    assert 'id="cancel"' in text
    assert "<script" not in text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy


def test_a_finished_studys_page_stops_refreshing(
    client: TestClient, store: Store, trained_study: str
) -> None:
    _, key = store.create_api_key("alice")  # the owner of trained_study
    login(client, key)
    text = client.get(f"/studies/{trained_study}").text
    assert '<b id="status">succeeded</b>' in text
    assert '<span id="trials">4/4</span>' in text and '<span id="iterations">240/240</span>' in text
    assert 'http-equiv="refresh"' not in text
    assert 'id="cancel"' not in text  # nothing left to cancel
    assert 'http-equiv="refresh"' not in client.get("/").text  # nor does the list


def test_another_owners_study_page_is_not_found(
    client: TestClient, store: Store, submit: Any, bob: Headers
) -> None:
    theirs = running_study(store, submit, bob)
    # Without a session (one that ended while the page reloaded itself): the login form.
    away = client.get(f"/studies/{theirs}", follow_redirects=False)
    assert away.status_code == 303 and away.headers["location"] == "/"
    session_for(client, store, "alice")
    assert client.get(f"/studies/{theirs}").status_code == 404
    assert client.get("/studies/not-a-uuid").status_code == 404
    cancel = client.post(f"/studies/{theirs}/cancel", content="confirm=yes", headers=FORM)
    assert cancel.status_code == 404
    assert store.get_study(theirs).status == "running"  # type: ignore[union-attr]
    assert not store.get_study(theirs).cancel_requested  # type: ignore[union-attr]


def test_cancel_from_the_page_asks_first_and_only_from_the_services_pages(
    client: TestClient, store: Store, submit: Any
) -> None:
    alice = session_for(client, store, "alice")
    study = submit(alice)["id"]
    action = f"/studies/{study}/cancel"
    # The first POST only asks.
    confirm = client.post(action, content="", headers=FORM)
    assert confirm.status_code == 200
    assert 'id="confirm-cancel"' in confirm.text and 'name="confirm" value="yes"' in confirm.text
    assert store.get_study(study).status == "queued"  # type: ignore[union-attr]
    # Another site's page cannot cancel, confirmed or not.
    for headers in ({}, {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = client.post(action, content="confirm=yes", headers={**FORM_TYPE, **headers})
        assert refused.status_code == 403, headers
        assert store.get_study(study).status == "queued"  # type: ignore[union-attr]
    done = client.post(action, content="confirm=yes", headers=FORM, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/studies/{study}"
    assert store.get_study(study).status == "cancelled"  # type: ignore[union-attr]
    assert '<b id="status">cancelled</b>' in client.get(f"/studies/{study}").text
    # A running study is stopped through the dispatcher: its cancel is requested.
    running = running_study(store, submit, alice)
    client.post(f"/studies/{running}/cancel", content="confirm=yes", headers=FORM)
    assert store.get_study(running).cancel_requested  # type: ignore[union-attr]
    # An ended study cannot be cancelled again.
    again = client.post(action, content="confirm=yes", headers=FORM)
    assert again.status_code == 409


def test_the_schedules_page_lists_and_enables_or_disables(
    client: TestClient, store: Store, spec: Any
) -> None:
    alice = session_for(client, store, "alice")
    made = client.post(
        "/api/v1/schedules",
        json={
            "name": "nightly <cnn>",
            "cron": "0 2 * * *",
            "timezone": "Europe/Paris",
            "spec": spec(),
        },
        headers=alice,
    )
    assert made.status_code == 201, made.text
    schedule = made.json()["id"]
    bob = new_key(store, "bob")
    client.post(
        "/api/v1/schedules",
        json={"name": "bob's", "cron": "0 3 * * *", "timezone": "UTC", "spec": spec()},
        headers=bob,
    )
    page = client.get("/schedules")
    assert page.status_code == 200
    text = page.text
    assert "nightly &lt;cnn&gt;" in text and "bob&#x27;s" not in text
    assert f'href="/api/v1/schedules/{schedule}/page.html"' in text
    assert "<code>0 2 * * *</code>" in text and "Europe/Paris" in text and "no run yet" in text
    assert "<th>Next run</th>" in text and "<th>Regression</th>" in text
    assert 'href="/schedules"' in client.get("/").text
    action = f"/schedules/{schedule}/enabled"
    refused = client.post(action, content="enabled=false", headers={**FORM_TYPE})
    assert refused.status_code == 403
    assert store.get_schedule(schedule).enabled  # type: ignore[union-attr]
    off = client.post(action, content="enabled=false", headers=FORM, follow_redirects=False)
    assert off.status_code == 303 and off.headers["location"] == "/schedules"
    assert not store.get_schedule(schedule).enabled  # type: ignore[union-attr]
    assert "paused" in client.get("/schedules").text
    client.post(action, content="enabled=true", headers=FORM)
    assert store.get_schedule(schedule).enabled  # type: ignore[union-attr]
    # Another owner's schedule: not found, unchanged.
    theirs = client.get("/api/v1/schedules", headers=bob).json()[0]["id"]
    assert (
        client.post(
            f"/schedules/{theirs}/enabled", content="enabled=false", headers=FORM
        ).status_code
        == 404
    )
    assert store.get_schedule(theirs).enabled  # type: ignore[union-attr]


# ---- in a real browser -------------------------------------------------------------------


@pytest.fixture
def live_app(settings_for: Any, tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """The app served on a free port (a SQLite file, no Ray): its URL and its store."""
    app = create_app(settings_for(f"sqlite:///{tmp_path / 'clrstudy.db'}"), run_studies=False)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}", app.state.store
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.slow
def test_in_a_browser_a_study_page_follows_the_study_and_cancels_it(
    live_app: tuple[str, Store], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, store = live_app
    _, key = store.create_api_key("alice")
    created = httpx.post(f"{base}/api/v1/studies", json=study_spec(), headers=bearer(key))
    assert created.status_code == 202, created.text
    study = created.json()["id"]
    assert store.transition(study, "running", expected={"queued"})
    queued = httpx.post(f"{base}/api/v1/studies", json=study_spec(), headers=bearer(key))
    assert queued.status_code == 202, queued.text
    events = run_events(PLANNED)
    sink = DatabaseSink(store, study)
    for event in (*events[:5], *events[5:7]):  # plan..arms, fixed-s0 to iteration 30
        sink.emit(event)
    sink.flush()
    with chromium(tmp_path / "chromium-profile") as browser:
        browser.get(f"{base}/")
        browser.find_element(By.NAME, "api_key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#login button").click()
        browser.find_element(By.CSS_SELECTOR, f"a[href='/studies/{study}']").click()
        assert browser.find_element(By.ID, "iterations").text == "30/240"
        for event in events[7:9]:  # fixed-s0's last points and its end
            sink.emit(event)
        sink.flush()
        # The page reloads itself (meta refresh): the count rises without a click.
        WebDriverWait(browser, 2 * REFRESH_S + 2).until(
            lambda b: b.find_element(By.ID, "iterations").text == "60/240"
        )
        browser.find_element(By.CSS_SELECTOR, "#cancel button").click()
        browser.find_element(By.CSS_SELECTOR, "#confirm-cancel button").click()
        WebDriverWait(browser, 10).until(lambda b: "cancel requested" in b.page_source)
        assert store.get_study(study).cancel_requested  # type: ignore[union-attr]
        # A queued study ends at once: its page says so and stops reloading.
        browser.get(f"{base}/")
        browser.find_element(By.CSS_SELECTOR, f"a[href='/studies/{queued.json()['id']}']").click()
        browser.find_element(By.CSS_SELECTOR, "#cancel button").click()
        browser.find_element(By.CSS_SELECTOR, "#confirm-cancel button").click()
        WebDriverWait(browser, 10).until(
            lambda b: b.find_element(By.ID, "status").text == "cancelled"
        )
        assert 'http-equiv="refresh"' not in browser.page_source  # (no implicit wait)
    sink.close()
    assert store.get_study(queued.json()["id"]).status == "cancelled"  # type: ignore[union-attr]


def test_the_pages_fit_a_phones_width(client: TestClient, store: Store, submit: Any) -> None:
    alice = session_for(client, store, "alice")
    study = running_study(store, submit, alice)
    # No fixed width past a phone's (~360 px); the rest is max-width or relative.
    fixed = re.findall(r"(?<![-\w])(?:min-)?width:\s*(\d+)px", STYLESHEET)
    assert all(int(px) <= 360 for px in fixed), fixed
    assert "figure.plot svg { max-width: 100%" in STYLESHEET
    for path in ("/", f"/studies/{study}", "/schedules"):
        text = client.get(path).text
        assert '<meta name="viewport" content="width=device-width' in text, path
        assert "<script" not in text, path
        # Wide tables scroll inside their box instead of widening the page.
        assert text.count("<table") == text.count('<div class="scroll"><table'), path
