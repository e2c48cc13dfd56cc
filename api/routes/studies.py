"""Studies: submit, list, follow, cancel, and read their results and reports."""

from __future__ import annotations

from contextlib import suppress
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import SkipValidation, ValidationError

from api.deps import (
    CurrentOwner,
    DashboardUrl,
    DispatcherDep,
    OwnedStudy,
    SettingsDep,
    StoreDep,
    visible_to,
)
from api.errors import (
    CONFLICT,
    NOT_FOUND,
    TOO_LARGE,
    TOO_MANY,
    UNAUTHORIZED,
    UNAVAILABLE,
    _doc,
    not_found,
)
from api.schemas import (
    ProgressView,
    StudyLinks,
    StudyPage,
    StudyStatus,
    StudyView,
    TrialView,
)
from service.dispatcher import Dispatcher
from service.report_cache import study_report
from service.reports import render_csv, render_html
from service.store import (
    IdempotencyKeyReused,
    InvalidTransition,
    Store,
    StudyRecord,
    TooManyStudies,
)
from service.studies import submit
from service.study_data import delete_study_data
from workers.spec import StudySpec

API_PREFIX = "/api/v1"  # of every resource's router; the study links below carry it
PREFIX = "/studies"

router = APIRouter(prefix=PREFIX, tags=["studies"], responses={**UNAUTHORIZED, **UNAVAILABLE})


def study_path(study_id: str) -> str:
    return f"{API_PREFIX}{PREFIX}/{study_id}"


def study_view(
    study: StudyRecord, store: Store, dashboard_url: str, *, admin: bool = False
) -> StudyView:
    """The study as the API shows it, with its progress read now; `error_detail` to admins."""
    progress = store.progress(study.id)
    path = study_path(study.id)
    job = study.submission_id
    return StudyView(
        id=study.id,
        name=study.name,
        owner_id=study.owner_id,
        status=study.status,
        phase=study.phase,
        progress=ProgressView(**vars(progress)),
        bounds=study.bounds,
        ray_job_id=job,
        ray_dashboard_url=ray_job_url(dashboard_url, job),
        error=study.error,
        error_detail=study.error_detail if admin else None,
        cancel_requested=study.cancel_requested,
        created_at=study.created_at,
        started_at=study.started_at,
        finished_at=study.finished_at,
        spec=study.spec,
        links=StudyLinks(
            self=path,
            trials=f"{path}/trials",
            results=f"{path}/results",
            report=f"{path}/report",
            report_html=f"{path}/report.html",
            report_csv=f"{path}/report.csv",
            cancel=f"{path}/cancel",
        ),
    )


def _body_error(error: Any) -> dict[str, Any]:
    """A spec error as FastAPI reports a body error: located under "body", JSON-ready."""
    ctx = {k: str(v) if isinstance(v, Exception) else v for k, v in error.get("ctx", {}).items()}
    return {**error, "loc": ("body", *error["loc"]), **({"ctx": ctx} if ctx else {})}


def study_results(store: Store, study: StudyRecord) -> dict[str, Any]:
    """The study's results document; 404 where the study was deleted meanwhile."""
    results = store.results(study.id)
    if results is None:  # deleted since `owned_study` found it
        raise not_found(study.id)
    return results


def owned_report(
    store: Store, study: StudyRecord, results: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The study's report, from `results` where the caller has them; 404 as above."""
    report = study_report(store, study.id, results)
    if report is None:  # deleted since `owned_study` found it
        raise not_found(study.id)
    return report


def ray_job_url(dashboard_url: str, submission_id: str | None) -> str | None:
    """The study's Ray job in the dashboard, once it was submitted."""
    return f"{dashboard_url}/#/jobs/{submission_id}" if submission_id else None


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=StudyView,
    summary="Submit a study",
    responses={
        202: {
            "description": "Queued (or, for a repeated Idempotency-Key, the study that key "
            "created); `Location` names the study.",
            "headers": {
                "Location": {"description": "The study's URL.", "schema": {"type": "string"}}
            },
        },
        **TOO_LARGE,
        **TOO_MANY,
    },
)
def submit_study(
    body: Annotated[StudySpec, SkipValidation, Body(description="The study to run.")],
    response: Response,
    owner: CurrentOwner,
    store: StoreDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
    dashboard_url: DashboardUrl,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="Any unique string: a retried POST with the same key returns the study "
            "the first one created instead of a second one; the same key with another spec "
            "is a 422.",
        ),
    ] = None,
) -> StudyView:
    """Validate the spec against the server's limits and queue it; the dispatcher starts it."""
    # Validated by `submit`, not by FastAPI (SkipValidation), so that the settings' limits apply.
    try:
        known, created = submit(store, settings, owner.id, body, idempotency_key)
    except ValidationError as error:
        errors = [_body_error(e) for e in error.errors(include_url=False)]
        raise RequestValidationError(errors) from None
    except IdempotencyKeyReused as error:
        raise RequestValidationError(
            [
                {
                    "type": "idempotency_key_reused",
                    "loc": ("header", "idempotency-key"),
                    "msg": str(error),
                    "input": idempotency_key,
                }
            ]
        ) from None
    except TooManyStudies as error:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=str(error)) from None
    if created and dispatcher is not None:
        dispatcher.wake()
    response.headers["Location"] = study_path(known.id)
    return study_view(known, store, dashboard_url)


@router.get("", response_model=StudyPage, summary="List studies")
def list_studies(
    owner: CurrentOwner,
    store: StoreDep,
    dashboard_url: DashboardUrl,
    limit: Annotated[int, Query(ge=1, le=200, description="Most studies on the page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Studies to skip.")] = 0,
    status_: Annotated[
        StudyStatus | None, Query(alias="status", description="Only studies in this status.")
    ] = None,
    name: Annotated[
        str | None,
        Query(
            max_length=200,
            # Study names are printable; PostgreSQL refuses a NUL in a query outright.
            pattern=r"^[^\x00-\x1f\x7f]*$",
            description="Only studies whose name contains this (any case; no control characters).",
        ),
    ] = None,
) -> StudyPage:
    """The caller's studies (an admin's: everyone's), newest first."""
    items, total = store.list_studies(
        owner_id=visible_to(owner), status=status_, name=name, limit=limit, offset=offset
    )
    return StudyPage(
        items=[study_view(s, store, dashboard_url, admin=owner.admin) for s in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{study_id}", response_model=StudyView, summary="Get a study", responses=NOT_FOUND)
def get_study(
    study: OwnedStudy, owner: CurrentOwner, store: StoreDep, dashboard_url: DashboardUrl
) -> StudyView:
    """Status, phase, progress, bounds, per-arm best accuracy and the Ray job of a study."""
    return study_view(study, store, dashboard_url, admin=owner.admin)


@router.post(
    "/{study_id}/cancel",
    response_model=StudyView,
    summary="Cancel a study",
    responses={**NOT_FOUND, **CONFLICT},
)
def cancel_study(
    study: OwnedStudy, store: StoreDep, dispatcher: DispatcherDep, dashboard_url: DashboardUrl
) -> StudyView:
    """A queued study is cancelled at once; a running one is stopped (`cancel_requested`)."""
    return study_view(cancel(study, store, dispatcher), store, dashboard_url)


def cancel(study: StudyRecord, store: Store, dispatcher: Dispatcher | None) -> StudyRecord:
    """Cancel the caller's `study` (the API's route and the study page's form): 409 if it
    has ended, 404 if it is gone."""
    try:
        cancelled = store.request_cancel(study.id)
    except InvalidTransition as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
    if cancelled is None:
        raise not_found(study.id)
    if dispatcher is not None:
        dispatcher.wake()
    return cancelled


@router.delete(
    "/{study_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a study",
    responses={
        **NOT_FOUND,
        409: _doc(
            "The study was running: its cancel is requested; DELETE again once it has ended "
            "(`clrstudy delete` waits for that)."
        ),
    },
)
def delete_study(
    study: OwnedStudy, store: StoreDep, settings: SettingsDep, dispatcher: DispatcherDep
) -> Response:
    """Delete the study (the owner's or, for an admin, any): its rows, its Optuna studies and
    its files under STORAGE_PATH. A running study is cancelled first."""
    if study.status != "running":
        # Cancelled first if queued, so that no dispatcher starts it meanwhile.
        store.transition(study.id, "cancelled", expected={"queued"})
        if delete_study_data(store, settings, study.id):
            return Response(status_code=status.HTTP_204_NO_CONTENT)
    with suppress(InvalidTransition):  # it may have ended meanwhile: DELETE again deletes it
        store.request_cancel(study.id)
    if dispatcher is not None:
        dispatcher.wake()
    raise HTTPException(
        status.HTTP_409_CONFLICT,
        detail=f"study {study.id} is running: its cancel is requested; delete it again once "
        "it has ended",
    )


@router.get(
    "/{study_id}/trials",
    response_model=list[TrialView],
    summary="List a study's trials",
    responses=NOT_FOUND,
)
def list_trials(study: OwnedStudy, store: StoreDep) -> list[TrialView]:
    """Every trial (arm x seed) in the order they were planned; empty before the study starts."""
    return [TrialView(**vars(t)) for t in store.trials(study.id)]


@router.get(
    "/{study_id}/results",
    summary="Get a study's results",
    responses={
        200: {"description": "The results document: docs/results-format.md (results.json)."},
        **NOT_FOUND,
    },
)
def get_results(study: OwnedStudy, store: StoreDep) -> dict[str, Any]:
    """Every curve of the study: the same content as `clrstudy run`'s results.json."""
    return study_results(store, study)


@router.get(
    "/{study_id}/report",
    summary="Get a study's comparison report (JSON)",
    tags=["reports"],
    responses={
        200: {"description": "The comparison report; `partial` while the study runs."},
        **NOT_FOUND,
    },
)
def get_report(study: OwnedStudy, store: StoreDep) -> dict[str, Any]:
    """Per arm: final accuracy with its CI, iterations to target, speedup, Welch's test."""
    return owned_report(store, study)


@router.get(
    "/{study_id}/report.csv",
    summary="Get a study's evaluation points (CSV)",
    tags=["reports"],
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "One row per evaluation point."},
        **NOT_FOUND,
    },
)
def get_report_csv(study: OwnedStudy, store: StoreDep) -> PlainTextResponse:
    """Every evaluation point of every trial, tidy: one row each."""
    return PlainTextResponse(
        render_csv(study_results(store, study)),
        media_type="text/csv",
        headers={"Content-Disposition": f'inline; filename="study-{study.id}.csv"'},
    )


@router.get(
    "/{study_id}/report.html",
    summary="Get a study's comparison report (HTML)",
    tags=["reports"],
    response_class=HTMLResponse,
    responses={200: {"description": "A self-contained page with tables and plots."}, **NOT_FOUND},
)
def get_report_html(study: OwnedStudy, store: StoreDep) -> HTMLResponse:
    """The report as a page a browser opens (the session cookie of POST /login is accepted)."""
    results = study_results(store, study)
    return HTMLResponse(render_html(results, owned_report(store, study, results)))
