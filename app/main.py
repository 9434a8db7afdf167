"""The ASGI application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import callbacks, health, root, v1
from app.api.body import BodiesInFlight
from app.api.errors import LastResort, install_error_handlers
from app.config import Settings
from app.db import create_db_engine
from app.gc_tuning import freeze_startup_objects, thaw
from app.health import Health
from app.logs import RequestLogMiddleware, configure_logging
from app.network import trust_proxies
from app.retention import purge_periodically
from app.runtime import Runtime
from app.shutdown import watch_signals
from app.tokens import callback_token
from app.ui.state import ui_state
from app.ui.web import install as install_ui
from app.webhooks.delivery import Deliverer
from app.writer import Writer


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings)
        # The writer holds one connection at a time and drops a broken one on
        # error, so it skips the pool's ping: a round trip saved per commit.
        write_engine = create_db_engine(settings, pool_pre_ping=False, pool_size=1)
        writer = Writer(
            write_engine,
            max_batch_states=settings.write_batch_max_states,
            timeout=settings.write_timeout_seconds,
        )
        writer.start()
        token = callback_token(settings, engine)
        bodies = BodiesInFlight(
            settings.max_bodies_in_flight_bytes, settings.body_read_timeout_seconds
        )
        # Outbound webhooks: delivered from here unless WEBHOOK_DELIVERY=false.
        deliverer = Deliverer(settings, engine, wake=writer.commit_signal)
        runtime = Runtime(settings, engine, writer, token, Health(engine), bodies, deliverer)
        app.state.runtime = runtime
        app.state.ui = ui_state(settings, engine)  # the dashboard's caches
        unwatch = watch_signals(runtime.health, settings.shutdown_delay_seconds)
        purger = asyncio.create_task(purge_periodically(engine, settings.raw_retention_days))
        delivering = asyncio.create_task(deliverer.run()) if settings.webhook_delivery else None
        # What start-up built lives as long as the process;
        # frozen, the collector stops walking it on every collection.
        freeze_startup_objects()
        try:
            yield
        finally:
            unwatch()
            purger.cancel()
            if delivering is not None:
                await deliverer.stop()
                await delivering
            await writer.stop()
            await bodies.close()
            write_engine.dispose()
            engine.dispose()
            thaw()

    app = FastAPI(
        title="targetsms-receiver",
        summary="Stores TargetSMS delivery statuses and serves them.",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry asks for a tracer
        # provider on every request (2% of a 1-state callback); we export none.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.include_router(callbacks.router)
    app.include_router(v1.router)
    app.include_router(health.router)
    app.include_router(root.router)
    app.add_middleware(LastResort)  # inside the request log: it sees the id and the 500
    install_ui(app)  # the dashboard, /ui/
    app.add_middleware(callbacks.CallbackEndpoint)  # the provider's pushes, ahead of routing
    app.add_middleware(RequestLogMiddleware, access_log=settings.access_log)
    trust_proxies(app, settings)  # outermost: everything inside sees the real client
    return app


def app_from_environment() -> FastAPI:
    """uvicorn's factory (`app.main:app_from_environment`) for `serve`."""
    settings = Settings()
    # With --workers N each worker is a fresh (spawned) interpreter.
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
