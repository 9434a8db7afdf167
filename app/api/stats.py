"""`GET /api/v1/stats`: counts over a time range."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import ColumnElement, Connection, func, select

from app.api.auth import ReadKey
from app.api.deps import RuntimeDep
from app.api.errors import error_responses
from app.api.params import UtcDatetime, in_range
from app.api.schemas import Stats
from app.models import Document, Event, Message

router = APIRouter(tags=["stats"], dependencies=[ReadKey])

TRACKED = "tracked"  # the key for messages with no status yet


@router.get(
    "/stats",
    summary="Messages by status, delivery rate, duplicates and conflicts",
    response_model=Stats,
    responses=error_responses(401, 422),
)
def get_stats(
    runtime: RuntimeDep,
    since: Annotated[UtcDatetime | None, Query(description="Range start (inclusive).")] = None,
    until: Annotated[UtcDatetime | None, Query(description="Range end (exclusive).")] = None,
) -> dict[str, Any]:
    """Messages are counted by when they last changed (`updated_at` in the
    range), with their current status; duplicates and conflicts by when they
    were received. Omit both bounds for all time."""
    with runtime.engine.connect() as conn:
        by_status, final = _messages_by_status(conn, since, until)
        duplicates = _sum(
            conn, func.sum(Document.duplicate_count), Document.received_at, since, until
        )
        conflicts = _sum(
            conn, func.count(), Event.received_at, since, until, Event.conflict.is_(True)
        )
    delivered = by_status.get("deliver", 0)
    return {
        "since": since,
        "until": until,
        "messages": sum(by_status.values()),
        "by_status": by_status,
        "final": final,
        "delivered": delivered,
        "delivery_rate": round(delivered / final, 4) if final else None,
        "duplicates": duplicates,
        "conflicts": conflicts,
    }


def _messages_by_status(
    conn: Connection, since: datetime | None, until: datetime | None
) -> tuple[dict[str, int], int]:
    query = select(Message.status, Message.final, func.count()).group_by(
        Message.status, Message.final
    )
    query = query.where(*in_range(Message.updated_at, since, until))
    by_status: dict[str, int] = {}
    final = 0
    for status, is_final, count in conn.execute(query):
        key = TRACKED if status is None else status
        by_status[key] = by_status.get(key, 0) + count
        final += count if is_final else 0
    return dict(sorted(by_status.items())), final


def _sum(
    conn: Connection,
    aggregate: ColumnElement[Any],
    received_at: Any,
    since: datetime | None,
    until: datetime | None,
    *conditions: ColumnElement[bool],
) -> int:
    query = select(aggregate).where(*in_range(received_at, since, until), *conditions)
    return int(conn.execute(query).scalar() or 0)
