"""The human entry point: a page listing the caller's studies, and a login that sets a cookie.

A browser cannot send `Authorization: Bearer`, and a key in a URL ends up in logs and
history, so POST /login takes the key in a form body and starts a server-side session: the
HttpOnly, SameSite=Strict cookie holds only the session's random id (stored hashed, with an
expiry), which every route accepts in place of the header. Logout deletes the session;
revoking the key ends all of its sessions.
"""

from __future__ import annotations

from datetime import timedelta
from html import escape
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Cookie, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from api.deps import CROSS_SITE, SESSION_COOKIE, SettingsDep, StoreDep, same_origin, visible_to
from api.routes.studies import study_path
from service.reports.page import page
from service.store import OwnerRecord, Store

PAGE_SIZE = 200  # studies listed on the page; the API pages through the rest

router = APIRouter(include_in_schema=False)


def _login_page(message: str = "") -> str:
    error = f'<p class="error" id="login-error">{escape(message)}</p>' if message else ""
    return page(
        "clrstudy: log in",
        "<h1>clrstudy</h1><p>Log in with your API key (from <code>clrstudy keys create</code>)."
        f"</p>{error}"
        '<form method="post" action="/login" id="login">'
        '<label>API key <input type="password" name="api_key" autocomplete="off" required>'
        '</label> <button type="submit">Log in</button></form>',
    )


def _studies_page(store: Store, owner: OwnerRecord) -> str:
    studies, total = store.list_studies(owner_id=visible_to(owner), limit=PAGE_SIZE)
    rows = []
    for study in studies:
        progress = store.progress(study.id)
        path = study_path(study.id)
        rows.append(
            f"<tr><td>{escape(study.name)}</td><td>{study.status}</td><td>{study.phase}</td>"
            f"<td>{progress.trials_done}/{progress.trials_total} trials, "
            f"{progress.iterations_done:,}/{progress.iterations_total:,} iterations</td>"
            f'<td><a href="{path}/report.html">report</a> '
            f'<a href="{path}">JSON</a> <a href="{path}/report.csv">CSV</a></td></tr>'
        )
    more = f"<p>Showing the newest {PAGE_SIZE} of {total}.</p>" if total > len(studies) else ""
    table = (
        '<table id="studies"><tr><th>Name</th><th>Status</th><th>Phase</th><th>Progress</th>'
        f"<th>Results</th></tr>{''.join(rows)}</table>{more}"
        if studies
        else '<p id="no-studies">No studies yet: submit one with <code>clrstudy submit '
        "SPEC</code> or POST /api/v1/studies.</p>"
    )
    return page(
        "clrstudy: studies",
        '<header class="bar"><h1>Studies</h1>'
        f'<form method="post" action="/logout">{escape(owner.name)} '
        f'<button type="submit">Log out</button></form></header>{table}'
        '<p><a href="/docs">API documentation</a></p>',
    )


@router.get("/", response_class=HTMLResponse)
def index(
    store: StoreDep, session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None
) -> HTMLResponse:
    """The caller's studies; the login form without a valid session."""
    owner = store.authenticate_session(session) if session else None
    if owner is None:
        return HTMLResponse(_login_page())
    return HTMLResponse(_studies_page(store, owner))


@router.post("/login", response_model=None)
async def login(
    request: Request, store: StoreDep, settings: SettingsDep
) -> HTMLResponse | RedirectResponse:
    """Check the form's `api_key`, start a session in the cookie and go to the list."""
    # Parsed here: FastAPI's Form() would need python-multipart for one urlencoded field.
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    key = (form.get("api_key") or [""])[0].strip()
    max_age = timedelta(hours=settings.browser_session_hours)
    token = await run_in_threadpool(store.create_browser_session, key, max_age) if key else None
    if token is None:
        return HTMLResponse(
            _login_page("That API key is not valid."), status_code=status.HTTP_401_UNAUTHORIZED
        )
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(max_age.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
) -> RedirectResponse:
    """End the session (on the server too) and go back to the login form; only from this
    service's own page (another site cannot log its visitors out)."""
    if session and not same_origin(request, settings):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=CROSS_SITE)
    if session:
        store.end_browser_session(session)
    response = RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
    return response
