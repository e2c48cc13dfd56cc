"""Health checks for load balancers and orchestrators; no authentication."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import text

from api.deps import StoreDep
from api.schemas import HealthView, ReadinessView
from service.ray_cluster import RayCluster

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthView, summary="Is the process up")
def healthz() -> HealthView:
    """Answers as long as the process serves; touches neither the database nor Ray."""
    return HealthView(status="ok")


@router.get(
    "/readyz",
    response_model=ReadinessView,
    summary="Can the service serve",
    responses={503: {"model": ReadinessView, "description": "A dependency is unreachable."}},
)
def readyz(request: Request, response: Response, store: StoreDep) -> ReadinessView:
    """The database answers a `SELECT 1` and, where this process runs studies, Ray answers."""
    try:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = "ok"
    except Exception as error:  # any failure to answer means not ready
        # The details (hosts, driver messages) go to the log, not to anonymous callers.
        log.warning("readiness: the database does not answer: %s", error)
        database = f"unreachable ({type(error).__name__})"
    cluster: RayCluster | None = request.app.state.cluster
    if cluster is None:
        ray = "not used"
    else:
        ray = "ok" if cluster.reachable() else "unreachable"
        if ray != "ok":
            # Where the dashboard is (a host inside the cluster) is for the log only.
            log.warning("readiness: the Ray dashboard at %s does not answer", cluster.dashboard_url)
    ready = database == "ok" and ray in ("ok", "not used")
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return ReadinessView(status="ready" if ready else "unavailable", database=database, ray=ray)
