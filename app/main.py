"""The ASGI application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import callbacks
from app.api.errors import install_error_handlers
from app.config import Settings
from app.db import create_db_engine
from app.logs import AccessLogMiddleware
from app.retention import purge_periodically
from app.runtime import Runtime
from app.tokens import callback_token
from app.writer import Writer


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings)
        writer = Writer(
            engine,
            max_batch_states=settings.write_batch_max_states,
            timeout=settings.write_timeout_seconds,
        )
        writer.start()
        token = callback_token(settings, engine)
        app.state.runtime = Runtime(settings, engine, writer, token)
        purger = asyncio.create_task(purge_periodically(engine, settings.raw_retention_days))
        try:
            yield
        finally:
            purger.cancel()
            await writer.stop()
            engine.dispose()

    app = FastAPI(
        title="targetsms-receiver",
        summary="Stores TargetSMS delivery statuses and serves them.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(callbacks.router)
    if settings.access_log:
        app.add_middleware(AccessLogMiddleware)
    return app


def app_from_environment() -> FastAPI:
    """uvicorn's factory (`app.main:app_from_environment`) for `serve`."""
    return create_app(Settings())
