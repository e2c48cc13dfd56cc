"""The routes' dependencies: settings, the store, the caller and the study asked for."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from api.errors import not_found, unauthorized
from service.dispatcher import Dispatcher
from service.settings import Settings
from service.store import OwnerRecord, Store, StudyRecord

SESSION_COOKIE = "clrstudy_session"

bearer = HTTPBearer(auto_error=False, description="An API key from `clrstudy keys create`.")
session_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="Set by POST /login (browsers)."
)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_dispatcher(request: Request) -> Dispatcher | None:
    """The dispatcher; None where this app runs no studies (tests, `run_studies=False`)."""
    dispatcher: Dispatcher | None = request.app.state.dispatcher
    return dispatcher


def get_dashboard_url(request: Request) -> str:
    url: str = request.app.state.dashboard_url
    return url


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
DispatcherDep = Annotated[Dispatcher | None, Depends(get_dispatcher)]
DashboardUrl = Annotated[str, Depends(get_dashboard_url)]


def current_owner(
    store: StoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    cookie: Annotated[str | None, Depends(session_cookie)],
) -> OwnerRecord:
    """The owner of the bearer key, else of the session cookie's key; 401 without either."""
    key = credentials.credentials if credentials is not None else cookie
    if not key:
        raise unauthorized("missing API key: send `Authorization: Bearer <key>`")
    owner = store.authenticate(key)
    if owner is None:
        raise unauthorized("invalid or revoked API key")
    return owner


CurrentOwner = Annotated[OwnerRecord, Depends(current_owner)]


def visible_to(owner: OwnerRecord) -> int | None:
    """The owner whose studies `owner` may see: their own; None (every owner's) for admins."""
    return None if owner.admin else owner.id


def owned_study(
    study_id: Annotated[str, Path(description="The study's id, a UUID.")],
    store: StoreDep,
    owner: CurrentOwner,
) -> StudyRecord:
    """The study `study_id` if the caller may see it; 404 otherwise, also for a malformed id
    (a 403 would tell that a foreign study exists)."""
    try:
        canonical = str(uuid.UUID(study_id))
    except ValueError:
        raise not_found(study_id) from None
    study = store.get_study(canonical, visible_to(owner))
    if study is None:
        raise not_found(study_id)
    return study


OwnedStudy = Annotated[StudyRecord, Depends(owned_study)]
