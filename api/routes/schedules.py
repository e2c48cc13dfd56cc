"""Schedules: cron rules that create a study from a template, their history and regressions."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from api.deps import CurrentOwner, SettingsDep, StoreDep, visible_to
from api.errors import UNAUTHORIZED, UNAVAILABLE, Responses, _doc
from api.routes.studies import API_PREFIX, _body_error
from service.cron import check_cron, check_timezone
from service.models import utcnow
from service.reports.regressions import (
    DEFAULT_ITERATIONS_FRACTION,
    DEFAULT_POINTS_THRESHOLD,
    latest_comparison,
)
from service.reports.schedule_page import render_schedule_html
from service.scheduling import MAX_SCHEDULE_NAME, history
from service.settings import Settings
from service.store import DuplicateScheduleName, ScheduleRecord, TooManySchedules
from service.studies import validate_spec

PREFIX = "/schedules"
HISTORY_LIMIT = 100  # runs shown by default, and the most one request may ask for (each
# shown run's report is read)
HistoryLimit = Annotated[int, Query(ge=1, le=HISTORY_LIMIT, description="Newest runs shown.")]

NOT_FOUND: Responses = {404: _doc("No such schedule, or it belongs to another owner.")}
CONFLICT: Responses = {409: _doc("The owner has a schedule of that name already.")}
TOO_MANY: Responses = {429: _doc("The owner has as many schedules as allowed.")}

router = APIRouter(prefix=PREFIX, tags=["schedules"], responses={**UNAUTHORIZED, **UNAVAILABLE})


def _name(name: str) -> str:
    if not name.isprintable():
        raise ValueError(f"must be printable (no newlines or control characters), got {name!r}")
    return name


class ScheduleFields(BaseModel):
    """What a schedule is made of; PATCH takes any subset."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(
        None, min_length=1, max_length=MAX_SCHEDULE_NAME, description="Unique per owner."
    )
    cron: str | None = Field(
        None,
        description="A 5-field cron rule: minute hour day-of-month month day-of-week.",
        examples=["0 2 * * *"],
    )
    timezone: str | None = Field(
        None, description="The IANA time zone the rule is read in.", examples=["Europe/Berlin"]
    )
    spec: dict[str, Any] | None = Field(
        None, description="The StudySpec each run submits; its name is set per run."
    )
    enabled: bool | None = Field(None, description="A disabled schedule creates nothing.")
    points_threshold: float | None = Field(
        None,
        ge=0,
        le=100,
        description="With one seed (no CI): a drop of final accuracy by more than this many "
        "percentage points is a regression.",
    )
    iterations_fraction: float | None = Field(
        None,
        ge=0,
        description="A rise of iterations to target by more than this fraction is a regression.",
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str | None) -> str | None:
        return None if name is None else _name(name)

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str | None) -> str | None:
        return None if cron is None else check_cron(cron)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, timezone: str | None) -> str | None:
        if timezone is not None:
            check_timezone(timezone)
        return timezone


class ScheduleCreate(ScheduleFields):
    """A new schedule."""

    name: str = Field(min_length=1, max_length=MAX_SCHEDULE_NAME, description="Unique per owner.")
    cron: str = Field(
        description="A 5-field cron rule: minute hour day-of-month month day-of-week.",
        examples=["0 2 * * *"],
    )
    timezone: str = Field(
        "UTC", description="The IANA time zone the rule is read in.", examples=["Europe/Berlin"]
    )
    spec: dict[str, Any] = Field(description="The StudySpec each run submits.")
    enabled: bool = True
    points_threshold: float = Field(DEFAULT_POINTS_THRESHOLD, ge=0, le=100)
    iterations_fraction: float = Field(DEFAULT_ITERATIONS_FRACTION, ge=0)


class ScheduleLinks(BaseModel):
    self: str
    history: str = Field(description="Every run with its headline figures and regressions.")
    page: str = Field(description="The history as a self-contained HTML page with a plot.")


class ScheduleView(BaseModel):
    """A schedule; `latest` (GET /schedules/{id} only) is what a monitor polls."""

    id: int
    name: str
    owner_id: int
    cron: str
    timezone: str
    spec: dict[str, Any]
    enabled: bool
    points_threshold: float
    iterations_fraction: float
    created_at: datetime
    next_run_at: datetime = Field(description="The next due time (UTC).")
    last_run_at: datetime | None = Field(description="The due time of the last run (UTC).")
    regression: bool | None = Field(
        None,
        description="Whether the newest successful run regressed against the one before; "
        "null where not computed (listings) or nothing to compare yet.",
    )
    latest: dict[str, Any] | None = Field(
        None, description="The newest successful run's comparison, per arm, with reasons."
    )
    links: ScheduleLinks


def schedule_path(schedule_id: int) -> str:
    return f"{API_PREFIX}{PREFIX}/{schedule_id}"


def _view(schedule: ScheduleRecord, latest: dict[str, Any] | None = None) -> ScheduleView:
    path = schedule_path(schedule.id)
    return ScheduleView(
        **vars(schedule),
        regression=None if latest is None else latest["regression"],
        latest=latest,
        links=ScheduleLinks(self=path, history=f"{path}/history", page=f"{path}/page.html"),
    )


def owned_schedule(
    schedule_id: Annotated[str, Path(description="The schedule's id.")],
    store: StoreDep,
    owner: CurrentOwner,
) -> ScheduleRecord:
    """The schedule if the caller may see it; 404 otherwise, also for a malformed id."""
    schedule = None
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if re.fullmatch(r"[0-9]{1,9}", schedule_id):
        schedule = store.get_schedule(int(schedule_id), visible_to(owner))
    if schedule is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no schedule {schedule_id!r}")
    return schedule


OwnedSchedule = Annotated[ScheduleRecord, Depends(owned_schedule)]


def _spec_or_422(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The template validated as a StudySpec under the server's limits; 422 under body.spec."""
    try:
        valid = validate_spec(spec, settings)
    except ValidationError as error:
        errors = [_body_error({**e, "loc": ("spec", *e["loc"])}) for e in error.errors()]
        raise RequestValidationError(errors) from None
    dumped: dict[str, Any] = valid.model_dump(mode="json")
    return dumped


def _conflict(error: DuplicateScheduleName) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=str(error))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleView,
    summary="Create a schedule",
    responses={**CONFLICT, **TOO_MANY},
)
def create_schedule(
    body: ScheduleCreate,
    response: Response,
    owner: CurrentOwner,
    store: StoreDep,
    settings: SettingsDep,
) -> ScheduleView:
    """From its first due time on, each due time creates a study from the template."""
    spec = _spec_or_422(body.spec, settings)
    try:
        schedule = store.create_schedule(
            owner.id,
            body.name,
            body.cron,
            body.timezone,
            spec,
            now=utcnow(),
            enabled=body.enabled,
            points_threshold=body.points_threshold,
            iterations_fraction=body.iterations_fraction,
            max_schedules=settings.max_schedules_per_owner,
        )
    except DuplicateScheduleName as error:
        raise _conflict(error) from None
    except TooManySchedules as error:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=str(error)) from None
    response.headers["Location"] = schedule_path(schedule.id)
    return _view(schedule)


@router.get("", response_model=list[ScheduleView], summary="List schedules")
def list_schedules(owner: CurrentOwner, store: StoreDep) -> list[ScheduleView]:
    """The caller's schedules (an admin's: everyone's), oldest first."""
    return [_view(s) for s in store.list_schedules(visible_to(owner))]


@router.get(
    "/{schedule_id}", response_model=ScheduleView, summary="Get a schedule", responses=NOT_FOUND
)
def get_schedule(schedule: OwnedSchedule, store: StoreDep) -> ScheduleView:
    """The schedule with its latest regression flags (`regression`, `latest`)."""
    entries = history(store, schedule, to_latest_success=True)
    return _view(schedule, latest_comparison(entries))


@router.patch(
    "/{schedule_id}",
    response_model=ScheduleView,
    summary="Change a schedule",
    responses={**NOT_FOUND, **CONFLICT},
)
def update_schedule(
    body: ScheduleFields,
    schedule: OwnedSchedule,
    store: StoreDep,
    settings: SettingsDep,
) -> ScheduleView:
    """Change any fields; a new rule, time zone or re-enabling counts from now (no catch-up)."""
    changes = body.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None:
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("body", field), "msg": "may not be null"}]
            )
    if "spec" in changes:
        changes["spec"] = _spec_or_422(changes["spec"], settings)
    try:
        updated = store.update_schedule(schedule.id, changes, now=utcnow())
    except DuplicateScheduleName as error:
        raise _conflict(error) from None
    except LookupError:  # deleted since `owned_schedule` found it
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no schedule {schedule.id}"
        ) from None
    return _view(updated)


@router.delete(
    "/{schedule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a schedule",
    responses=NOT_FOUND,
)
def delete_schedule(schedule: OwnedSchedule, store: StoreDep) -> Response:
    """Delete the schedule and its run history; the studies it created stay."""
    store.delete_schedule(schedule.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{schedule_id}/history",
    summary="Get a schedule's runs",
    responses={
        200: {
            "description": "Every run, newest first: due time, state (created, or skipped "
            "with the reason), the study and its status, headline figures per arm, and the "
            "comparison with the previous successful run (per-arm deltas, regression flags)."
        },
        **NOT_FOUND,
    },
)
def get_history(
    schedule: OwnedSchedule,
    store: StoreDep,
    limit: HistoryLimit = HISTORY_LIMIT,
) -> dict[str, Any]:
    entries = history(store, schedule, limit)
    return {"schedule_id": schedule.id, "runs": entries, "latest": latest_comparison(entries)}


@router.get(
    "/{schedule_id}/page.html",
    summary="Get a schedule's history page (HTML)",
    response_class=HTMLResponse,
    responses={200: {"description": "A self-contained page: history table and plot."}, **NOT_FOUND},
)
def get_page(
    schedule: OwnedSchedule,
    store: StoreDep,
    limit: HistoryLimit = HISTORY_LIMIT,
) -> HTMLResponse:
    """Final accuracy per arm over time and every run; regressions in red."""
    return HTMLResponse(render_schedule_html(schedule, history(store, schedule, limit)))
