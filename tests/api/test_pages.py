"""The browser entry point: login with the API key into a server-side session, the list of
studies, changes only from the service's own pages, and the headers every response carries."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from api.deps import SESSION_COOKIE
from service.reports.page import STYLESHEET
from service.store import Store

Headers = dict[str, str]
SAME_ORIGIN = {"Origin": "http://testserver"}  # what a browser sends from the page


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
