"""The FastAPI app: `uvicorn --factory api.main:create_app`, or `clrstudy serve`.

Start-up migrates the database before serving and, unless told otherwise, starts (or joins)
the Ray cluster and the dispatcher that runs queued studies on it; shutdown stops them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.headers import SecurityHeaders
from api.routes import api_router, health, pages
from service.db import make_engine, upgrade
from service.dispatcher import Dispatcher
from service.ray_cluster import RayCluster
from service.scheduling import Scheduler
from service.settings import Settings, get_settings
from service.store import Store

DESCRIPTION = """Does a cyclical learning rate reach the accuracy of a fixed, decaying or
adaptive one in fewer iterations? Submit a study (a StudySpec), follow it, read its report.

Every endpoint but the health checks needs `Authorization: Bearer <key>`
(keys: `clrstudy keys create NAME`); browsers log in on `/` instead."""


def create_app(settings: Settings | None = None, *, run_studies: bool = True) -> FastAPI:
    """The app; `run_studies=False` serves the API without Ray (no study ever starts)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        store = Store(engine)
        cluster = RayCluster(settings) if run_studies else None
        dispatcher = Dispatcher(store, cluster, settings) if cluster else None
        # Tests without Ray tick schedules by hand, with a clock of their own.
        scheduler = Scheduler(store, settings) if run_studies else None
        app.state.store = store
        app.state.cluster = cluster
        app.state.dispatcher = dispatcher
        # The link to a study's Ray job, also where this process runs none.
        app.state.dashboard_url = (cluster or RayCluster(settings)).dashboard_url
        try:
            if cluster and dispatcher:
                cluster.start()
                dispatcher.start()
            if scheduler:
                scheduler.start()
            yield
        finally:
            if scheduler:
                scheduler.stop()
            if dispatcher:
                dispatcher.stop()
            if cluster:
                cluster.stop()
            engine.dispose()

    app = FastAPI(
        title="clrstudy",
        version=version("clrstudy"),
        description=DESCRIPTION,
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    docs = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.add_middleware(SecurityHeaders, unpoliced=frozenset(p for p in docs if p))
    install_error_handlers(app, settings.max_body_bytes)
    app.include_router(api_router)
    app.include_router(health.router)
    app.include_router(pages.router)
    return app
