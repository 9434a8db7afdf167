"""The change feed: every stored state once, in `events.id` order, as one item shape.

`GET /api/v1/changes` and webhook deliveries both hand out items built here,
so a consumer sees the same fields whichever way it reads the feed. Why the
order is safe to resume from is in `app/api/changes.py` and the README
("The change feed").
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from app import cursors
from app.models import Event

BEHIND_CAP = 1_000_000  # `behind` counts at most this many, so it stays cheap

COLUMNS = (
    Event.id,
    Event.id_sms,
    Event.status,
    Event.time_raw,
    Event.status_at,
    Event.source,
    Event.conflict,
    Event.received_at,
    Event.num_parts,
    Event.price,
)


def read_changes(engine: Engine, after: int, limit: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [item for _, item in select_changes(conn, after, limit)]


def select_changes(
    conn: Connection,
    after: int,
    limit: int,
    *,
    until: int | None = None,
    statuses: Collection[str] | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """(position, item) with `after < position <= until`, oldest first; only
    `statuses` when given."""
    query = select(*COLUMNS).where(Event.id > after).order_by(Event.id).limit(limit)
    if until is not None:
        query = query.where(Event.id <= until)
    if statuses is not None:
        query = query.where(Event.status.in_(sorted(statuses)))
    return [(row.id, change(row._mapping)) for row in conn.execute(query)]


def change(row: Any) -> dict[str, Any]:
    """One feed item from an `events` row (a mapping holding `COLUMNS`)."""
    values = {column.key: row[column.key] for column in COLUMNS if column.key != "id"}
    return {"cursor": cursor(row["id"])} | values


def cursor(position: int) -> str:
    return cursors.encode(cursors.CHANGES, position)


def head(conn: Connection) -> int:
    """The newest position in the feed (0 when empty)."""
    return conn.scalar(select(func.max(Event.id))) or 0


def behind(conn: Connection, cursor: int, now: datetime) -> tuple[int, float]:
    """(positions after `cursor`, capped at BEHIND_CAP; seconds since the oldest arrived)."""
    after = select(Event.id).where(Event.id > cursor).limit(BEHIND_CAP).subquery()
    count = conn.scalar(select(func.count()).select_from(after)) or 0
    if not count:
        return 0, 0.0
    oldest = conn.scalar(
        select(Event.received_at).where(Event.id > cursor).order_by(Event.id).limit(1)
    )
    return count, max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


async def first_set(events: Sequence[asyncio.Event | None], timeout: float) -> None:
    """Wait until one of `events` is set (news in the feed, a stop), or `timeout` seconds."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events if event is not None]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
