"""The human entry point: the caller's studies, each study's page (progress, plots, cancel),
the schedules (enable, disable), and a login that sets a cookie.

A browser cannot send `Authorization: Bearer`, and a key in a URL ends up in logs and
history, so POST /login takes the key in a form body and starts a server-side session: the
HttpOnly, SameSite=Strict cookie holds only the session's random id (stored hashed, with an
expiry), which every route accepts in place of the header. Logout deletes the session;
revoking the key ends all of its sessions.

The pages act through the API's own dependencies and service calls: `OwnedStudy` and
`OwnedSchedule` (ownership, 404 for another owner's) and `CurrentOwner` (the `Origin` check
for a change authenticated by the cookie); no script, so a change is a form POST.
"""

from __future__ import annotations

from datetime import timedelta
from html import escape
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Cookie, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from api.deps import (
    CROSS_SITE,
    SESSION_COOKIE,
    DashboardUrl,
    DispatcherDep,
    OwnedStudy,
    SettingsDep,
    StoreDep,
    owned_study,
    same_origin,
    visible_to,
)
from api.routes.schedules import OwnedSchedule, schedule_path
from api.routes.studies import (
    cancel,
    owned_report,
    ray_job_url,
    study_path,
    study_results,
)
from service.models import utcnow
from service.reports.page import page
from service.reports.regressions import latest_comparison
from service.reports.study_page import REFRESH_S, render_study_html
from service.scheduling import history
from service.store import OwnerRecord, ScheduleRecord, Store
from workers.states import TERMINAL_STUDY_STATUSES

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
            f'<tr><td><a href="/studies/{study.id}">{escape(study.name)}</a></td>'
            f"<td>{study.status}</td><td>{study.phase}</td>"
            f"<td>{progress.trials_done}/{progress.trials_total} trials, "
            f"{progress.iterations_done:,}/{progress.iterations_total:,} iterations</td>"
            f'<td><a href="{path}/report.html">report</a> '
            f'<a href="{path}">JSON</a> <a href="{path}/report.csv">CSV</a></td></tr>'
        )
    more = f"<p>Showing the newest {PAGE_SIZE} of {total}.</p>" if total > len(studies) else ""
    table = (
        '<div class="scroll"><table id="studies"><tr><th>Name</th><th>Status</th><th>Phase</th>'
        f"<th>Progress</th><th>Results</th></tr>{''.join(rows)}</table></div>{more}"
        if studies
        else '<p id="no-studies">No studies yet: submit one with <code>clrstudy submit '
        "SPEC</code> or POST /api/v1/studies.</p>"
    )
    active = any(study.status not in TERMINAL_STUDY_STATUSES for study in studies)
    return page(
        "clrstudy: studies",
        _header("Studies", owner)
        + table
        + '<p><a href="/schedules">Schedules</a> &middot; <a href="/docs">API documentation</a>'
        "</p>",
        refresh_s=REFRESH_S if active else None,
    )


def _header(title: str, owner: OwnerRecord) -> str:
    return (
        f'<header class="bar"><h1>{escape(title)}</h1>'
        f'<form method="post" action="/logout">{escape(owner.name)} '
        '<button type="submit">Log out</button></form></header>'
    )


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body, each field's first value."""
    # Parsed here: FastAPI's Form() would need python-multipart for a few urlencoded fields.
    fields = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    return {name: values[0] for name, values in fields.items()}


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
    key = (await _form(request)).get("api_key", "").strip()
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


@router.get("/studies/{study_id}", response_model=None)
def study_page(
    study_id: str,
    store: StoreDep,
    dashboard_url: DashboardUrl,
    session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
) -> HTMLResponse | RedirectResponse:
    """The study now: status, progress, bounds, best accuracy per arm, plots, links; the
    login form once the session has ended (the page may have been reloading itself)."""
    owner = store.authenticate_session(session) if session else None
    if owner is None:
        return RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    study = owned_study(study_id, store, owner)
    results = study_results(store, study)
    report = owned_report(store, study, results)
    path = study_path(study.id)
    return HTMLResponse(
        render_study_html(
            study,
            store.progress(study.id),
            results,
            report,
            links={"report": f"{path}/report.html", "JSON": path, "CSV": f"{path}/report.csv"},
            ray_job_url=ray_job_url(dashboard_url, study.submission_id),
            cancel_action=None
            if study.status in TERMINAL_STUDY_STATUSES
            else f"/studies/{study.id}/cancel",
        )
    )


@router.post("/studies/{study_id}/cancel", response_model=None)
async def cancel_from_page(
    request: Request, study: OwnedStudy, store: StoreDep, dispatcher: DispatcherDep
) -> HTMLResponse | RedirectResponse:
    """First a confirmation page; its form (`confirm=yes`) cancels as the API does."""
    if (await _form(request)).get("confirm") != "yes":
        return HTMLResponse(
            page(
                f"Cancel {study.name}?",
                f"<h1>Cancel {escape(study.name)}?</h1><p>Its running trials stop; what they "
                "recorded so far stays, and the report shows it as partial.</p>"
                f'<form method="post" action="/studies/{study.id}/cancel" id="confirm-cancel">'
                '<input type="hidden" name="confirm" value="yes">'
                '<button type="submit">Yes, cancel the study</button></form>'
                f'<p><a href="/studies/{study.id}">No, back to the study</a></p>',
            )
        )
    await run_in_threadpool(cancel, study, store, dispatcher)
    return RedirectResponse(f"/studies/{study.id}", status_code=status.HTTP_303_SEE_OTHER)


def _schedule_row(store: Store, schedule: ScheduleRecord) -> str:
    entries = history(store, schedule, to_latest_success=True)
    latest = latest_comparison(entries)
    if entries:
        last = entries[0]
        result = escape(last["study_status"] or last["state"])
        if last["study_id"]:
            result = f'<a href="/studies/{last["study_id"]}">{result}</a>'
    else:
        result = "no run yet"
    regression = {None: "&ndash;", True: "<b>regression</b>", False: "no"}[
        None if latest is None else bool(latest["regression"])
    ]
    flip = "false" if schedule.enabled else "true"
    action = "Disable" if schedule.enabled else "Enable"
    next_run = f"{schedule.next_run_at:%Y-%m-%d %H:%M} UTC" if schedule.enabled else "paused"
    flagged = ' class="regression"' if latest and latest["regression"] else ""
    return (
        f"<tr{flagged}>"
        f'<td><a href="{schedule_path(schedule.id)}/page.html">{escape(schedule.name)}</a></td>'
        f"<td><code>{escape(schedule.cron)}</code></td><td>{escape(schedule.timezone)}</td>"
        f"<td>{next_run}</td><td>{result}</td><td>{regression}</td><td>"
        f'<form method="post" action="/schedules/{schedule.id}/enabled" class="inline">'
        f'<input type="hidden" name="enabled" value="{flip}">'
        f'<button type="submit">{action}</button></form></td></tr>'
    )


@router.get("/schedules", response_model=None)
def schedules_page(
    store: StoreDep, session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None
) -> HTMLResponse | RedirectResponse:
    """The caller's schedules, each with its next run, last result and regression flag."""
    owner = store.authenticate_session(session) if session else None
    if owner is None:
        return RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
    schedules = store.list_schedules(visible_to(owner))
    table = (
        '<div class="scroll"><table id="schedules"><tr><th>Name</th><th>Rule</th>'
        "<th>Time zone</th><th>Next run</th><th>Last result</th><th>Regression</th>"
        f"<th>Action</th></tr>{''.join(_schedule_row(store, s) for s in schedules)}</table></div>"
        if schedules
        else '<p id="no-schedules">No schedules yet: POST /api/v1/schedules makes one.</p>'
    )
    return HTMLResponse(
        page(
            "clrstudy: schedules",
            _header("Schedules", owner) + table + '<p><a href="/">Studies</a></p>',
        )
    )


@router.post("/schedules/{schedule_id}/enabled")
async def enable_from_page(
    request: Request, schedule: OwnedSchedule, store: StoreDep
) -> RedirectResponse:
    """Enable (`enabled=true`) or disable the schedule, as PATCH does; back to the list."""
    enabled = (await _form(request)).get("enabled") == "true"
    try:
        await run_in_threadpool(
            store.update_schedule, schedule.id, {"enabled": enabled}, now=utcnow()
        )
    except LookupError:  # deleted since `owned_schedule` found it
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no schedule {schedule.id}"
        ) from None
    return RedirectResponse("/schedules", status_code=status.HTTP_303_SEE_OTHER)
