"""Operations endpoints on the app port: `/livez`, `/readyz`, `/metrics`.

The nginx site in `deploy/` does not pass any of them through; probes and the
Prometheus scraper reach the app port on the internal network.

`/readyz` answers 503 from the moment a SIGTERM or SIGINT arrives. uvicorn
stops accepting connections as soon as it handles the signal, so for the 503
to be seen at all (by a load balancer that checks readiness) the signal can
be held back for `SHUTDOWN_DELAY_SECONDS` while the service keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])

READY_TIMEOUT_SECONDS = 2.0
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SignalHandler = Callable[[int, FrameType | None], Any]


class Health:
    """Readiness: the database answers, and shutdown has not begun."""

    def __init__(self, engine: Engine, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        self.engine = engine
        self.timeout = timeout
        self.shutting_down = False
        # At most one check in flight: a hung database must not pile up threads.
        self._check: asyncio.Future[None] | None = None

    async def database_problem(self) -> str | None:
        """None when `SELECT 1` succeeds within the timeout, else what went wrong."""
        if self._check is None or self._check.done():
            self._check = asyncio.get_running_loop().run_in_executor(None, self._select_one)
        try:
            await asyncio.wait_for(asyncio.shield(self._check), self.timeout)
        except TimeoutError:
            return f"the database did not answer within {self.timeout:g} s"
        except Exception as exc:
            return f"the database is unreachable ({type(exc).__name__})"
        return None

    def _select_one(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def watch_signals(self, delay: float) -> Callable[[], None]:
        """Chain onto uvicorn's SIGTERM/SIGINT handlers; returns the undo."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # in-thread servers (tests) get no signals
        previous = {sig: signal.getsignal(sig) for sig in SHUTDOWN_SIGNALS}
        for sig, handler in previous.items():
            if callable(handler):
                signal.signal(sig, self._on_signal(handler, delay))

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _on_signal(self, passed_on: SignalHandler, delay: float) -> SignalHandler:
        def handle(sig: int, frame: FrameType | None) -> None:
            first = not self.shutting_down
            self.shutting_down = True
            if first and delay > 0:
                later = threading.Timer(delay, passed_on, (sig, frame))
                later.daemon = True
                later.start()
            else:
                passed_on(sig, frame)

        return handle


def get_health(request: Request) -> Health:
    health: Health = request.app.state.health
    return health


HealthDep = Annotated[Health, Depends(get_health)]


@router.get("/livez", summary="Liveness: the process answers (checks nothing external)")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database answers and shutdown has not begun",
    responses={503: {"description": "Not ready: database unreachable, or shutting down."}},
)
async def readyz(health: HealthDep) -> JSONResponse:
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
