"""The routes' dependencies: settings, the store, the caller and the study asked for."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from api.errors import not_found, unauthorized
from service.dispatcher import Dispatcher
from service.settings import Settings
from service.store import OwnerRecord, Store, StudyRecord

SESSION_COOKIE = "clrstudy_session"

bearer = HTTPBearer(auto_error=False, description="An API key from `clrstudy keys create`.")
session_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="Set by POST /login (browsers): a session id; changes need this service's Origin.",
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


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_SITE = (
    "a change authenticated by the session cookie must come from this service's pages "
    "(Origin or Sec-Fetch-Site)"
)


def same_origin(request: Request, settings: Settings) -> bool:
    """Whether a browser sent `request` from this service's own pages: `Sec-Fetch-Site`
    says so, or `Origin` is this service's (as the request reached it, or PUBLIC_URL).

    A request that has neither header did not come from a current browser's page, and is
    refused too: a cookie alone never authorizes a change.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    own = {f"{request.url.scheme}://{request.url.netloc}"}
    if settings.public_url:
        public = urlsplit(settings.public_url)
        own.add(f"{public.scheme}://{public.netloc}")
    return origin in own


def current_owner(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    cookie: Annotated[str | None, Depends(session_cookie)],
) -> OwnerRecord:
    """The owner of the bearer key, else of the browser session; 401 without either.

    A change (POST, PATCH, DELETE) authenticated by the session cookie must come from this
    service's own pages (403 otherwise): another site's page can make a browser send the
    cookie, but not these headers.
    """
    if credentials is not None:
        owner = store.authenticate(credentials.credentials)
    elif cookie:
        if request.method in UNSAFE_METHODS and not same_origin(request, settings):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=CROSS_SITE)
        owner = store.authenticate_session(cookie)
    else:
        raise unauthorized("missing API key: send `Authorization: Bearer <key>`")
    if owner is None:
        raise unauthorized("invalid or revoked API key, or an ended session")
    return owner


def admin_owner(owner: Annotated[OwnerRecord, Depends(current_owner)]) -> OwnerRecord:
    """The caller, who must be an admin (403 otherwise)."""
    if not owner.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only an admin may do this")
    return owner


CurrentOwner = Annotated[OwnerRecord, Depends(current_owner)]
AdminOwner = Annotated[OwnerRecord, Depends(admin_owner)]


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
