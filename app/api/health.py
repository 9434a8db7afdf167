"""Operations endpoints on the app port: `/livez`, `/readyz`, `/metrics`.

The nginx site in `deploy/` does not pass any of them through; probes and the
Prometheus scraper reach the app port on the internal network.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.api.deps import RuntimeDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/livez", summary="Liveness: the process answers (checks nothing external)")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database answers and shutdown has not begun",
    responses={503: {"description": "Not ready: database unreachable, or shutting down."}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    health = runtime.health
    if health.shutting_down:
        return JSONResponse({"status": "shutting_down"}, status_code=503)
    problem = await health.database_problem()
    if problem is not None:
        log.warning("not ready: %s", problem)
        return JSONResponse({"status": "unavailable", "detail": problem}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(runtime: RuntimeDep) -> Response:
    body = await run_in_threadpool(metrics.render, runtime.engine)
    return Response(body, media_type=metrics.CONTENT_TYPE)
