"""The API's routers: one per resource under `/api/v1`, health checks and pages at the root."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import catalog, health, keys, pages, schedules, studies
from api.routes.studies import API_PREFIX

api_router = APIRouter(prefix=API_PREFIX)
api_router.include_router(studies.router)
api_router.include_router(catalog.router)
api_router.include_router(schedules.router)
api_router.include_router(keys.router)

__all__ = ["API_PREFIX", "api_router", "health", "pages"]
