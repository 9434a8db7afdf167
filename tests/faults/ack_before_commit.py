"""A deliberately broken receiver: the negative control of the kill -9 test.

It acknowledges a document's ids at once and stores them afterwards, in a
write-behind loop that commits what queued every `FLUSH_EVERY_SECONDS`. This is
the mistake the real service must never make (and, by FastAPI's teardown
order, the one a commit in a dependency's teardown makes): a crash between the
answer and the commit loses acknowledged states. The kill -9 harness has to
catch it; if it ever stops doing so, the harness has gone blind.

Run only by the fault tests, as `uvicorn --factory
tests.faults.ack_before_commit:create_broken_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.config import Settings
from app.db import create_db_engine, write_transaction
from app.ingest import Submission
from app.protocol import DocumentError, ack_document, error_document, parse_document, unique_ids
from app.store import store_batch

FLUSH_EVERY_SECONDS = 0.2
XML = "application/xml; charset=utf-8"


def create_broken_app() -> Starlette:
    settings = Settings()
    engine = create_db_engine(settings)
    queue: list[Submission] = []

    def store(batch: list[Submission]) -> None:
        with write_transaction(engine) as conn:
            store_batch(conn, batch, datetime.now(UTC))

    async def write_behind() -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_SECONDS)
            batch = queue[:]
            del queue[: len(batch)]
            if batch:
                await asyncio.to_thread(store, batch)

    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            parsed = parse_document(body, settings.zone, settings.max_states_per_document)
        except DocumentError as exc:
            return Response(error_document(str(exc)), status_code=400, media_type=XML)
        now = datetime.now(UTC)
        queue.append(Submission(states=parsed.states, source="callback", received_at=now))
        return Response(ack_document(unique_ids(parsed.states)), media_type=XML)  # too early

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(write_behind())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        engine.dispose()

    routes = [Route("/callbacks/targetsms/{token}", receive, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)
