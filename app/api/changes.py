"""`GET /api/v1/changes`: every stored state, once, in one total order.

The order is `events.id`. A reader that resumes after the last id it saw can
never miss a state, because no id becomes visible behind one already visible:
every write holds the database-wide write lock (`db.write_transaction`) from
before it draws its first id until after its commit is visible, so ids become
visible in the order they were drawn (see the README, "The change feed").

`wait` long-polls without holding a thread: the handler sleeps on the event
loop until this process's writer commits, and re-reads every half second
for commits made by other processes. A SIGTERM ends the wait at once: the
poll answers with what it has (often nothing new) and the shutdown goes on.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from app import cursors
from app.api.auth import ReadKey
from app.api.deps import RuntimeDep
from app.api.errors import error_responses
from app.api.schemas import ChangePage
from app.feed import first_set, read_changes

router = APIRouter(tags=["changes"], dependencies=[ReadKey])

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MAX_WAIT_SECONDS = 30
RECHECK_SECONDS = 0.5


@router.get(
    "/changes",
    summary="Every stored state, in one total order, from a cursor",
    response_model=ChangePage,
    responses=error_responses(401, 422),
)
async def list_changes(
    request: Request,
    runtime: RuntimeDep,
    after: Annotated[
        str | None,
        Query(description="A `cursor` or `next_cursor` from this feed; omit to start."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_SECONDS, description="If nothing is new, wait up to this long."),
    ] = 0,
) -> dict[str, Any]:
    """States after `after`, oldest first. Store `next_cursor` and pass it as
    `after` next time: you will see every state exactly once."""
    position = cursors.decode(cursors.CHANGES, after) if after is not None else 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    stopping = runtime.health.stopping
    while True:
        committed = runtime.writer.commit_signal()  # before reading: see writer
        items = await run_in_threadpool(read_changes, runtime.engine, position, limit)
        remaining = deadline - loop.time()
        if items or remaining <= 0 or stopping.is_set() or await request.is_disconnected():
            break
        await first_set([committed, stopping], min(RECHECK_SECONDS, remaining))
    next_cursor = items[-1]["cursor"] if items else cursors.encode(cursors.CHANGES, position)
    return {"items": items, "next_cursor": next_cursor}
