"""The browser entry point: login with the API key into a cookie, the list of studies."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from api.deps import SESSION_COOKIE
from service.reports.page import STYLESHEET
from service.store import Store

Headers = dict[str, str]


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
    response = client.post("/logout", follow_redirects=False)
    assert response.status_code == 303
    assert f'{SESSION_COOKIE}=""' in response.headers["set-cookie"]
    assert 'id="login"' in client.get("/").text
    assert client.get("/api/v1/studies").status_code == 401
