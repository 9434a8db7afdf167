"""Reconciliation's database side: one window's writes, and the per-day lease.

A window is applied in one `db.write_transaction`: read what we hold for its
ids, store the provider's states through the write path callbacks and polls
take (`store_states`, source "reconcile"), upsert the context, and push the
day's lease forward. Stored whole or not at all.

**One reconciler per day.** A report row with status "running" and
`lease_until` in the future is the day's lease. Claims run under the
database-wide write lock, so two claims never both see the day free; a
claim also closes rows whose lease ran out (a reconciler that died) as
failed. Each window renews the lease by LEASE; a run that outlives its lease
without renewing it (a window taking longer than LEASE) may be joined by
another, which at worst stores the same states twice (idempotent).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Engine, Table, insert, select, update

from app.db import write_transaction
from app.ingest import Row, Submission
from app.models import REPORT_ERROR_LENGTH, Message, MessageContext, ReconciliationReport
from app.protocol import IncomingState
from app.store import insert_rows, one_of, store_batch, update_rows

SOURCE = "reconcile"
LEASE = timedelta(minutes=15)
MESSAGES = cast(Table, Message.__table__)
CONTEXT = cast(Table, MessageContext.__table__)
REPORTS = cast(Table, ReconciliationReport.__table__)
COMPARED = [column for column in CONTEXT.c if column.name not in ("id_sms", "updated_at")]


@dataclass(frozen=True, slots=True)
class Held:
    """What we hold for an id before the window is applied."""

    status: str | None
    final: bool


def store_states(conn: Connection, states: Sequence[IncomingState], now: datetime) -> int:
    """The provider's states through the common write path; how many were new.

    Inside the window's own transaction, so the states, the context and the
    lease commit together.
    """
    if not states:
        return 0
    (outcome,) = store_batch(conn, [Submission(states, SOURCE, now)], now)
    return outcome.stored


def held(conn: Connection, ids: Collection[str]) -> dict[str, Held]:
    query = select(Message.id_sms, Message.status, Message.final).where(
        one_of(MESSAGES.c.id_sms, ids, conn)
    )
    return {row.id_sms: Held(row.status, row.final) for row in conn.execute(query)}


def upsert_context(conn: Connection, rows: Sequence[Row]) -> None:
    """Insert new context rows, update changed ones; the same context again writes nothing.

    Re-reading a day (the schedule does, every few hours) mostly finds what it
    found before; comparing first keeps that run to reads.
    """
    if not rows:
        return
    ids = [row["id_sms"] for row in rows]
    query = select(CONTEXT.c.id_sms, *COMPARED).where(one_of(CONTEXT.c.id_sms, ids, conn))
    stored = {row[0]: tuple(row[1:]) for row in conn.execute(query)}
    new = [row for row in rows if row["id_sms"] not in stored]
    changed = [
        row
        for row in rows
        if row["id_sms"] in stored and tuple(row[c.name] for c in COMPARED) != stored[row["id_sms"]]
    ]
    insert_rows(conn, CONTEXT, new)
    update_rows(conn, CONTEXT, "id_sms", changed)


def claim_day(engine: Engine, day: date, owner: str, now: datetime) -> int | None:
    """Open a report row for `day` holding its lease; None if another run holds it."""
    running = (REPORTS.c.day == day, REPORTS.c.status == "running")
    with write_transaction(engine) as conn:
        conn.execute(
            update(REPORTS)
            .where(*running, REPORTS.c.lease_until <= now)
            .values(status="failed", error="abandoned: its lease ran out", lease_until=None)
        )
        if conn.execute(select(REPORTS.c.id).where(*running).limit(1)).first() is not None:
            return None
        values = {"day": day, "status": "running", "owner": owner, "started_at": now}
        statement = insert(REPORTS).values(lease_until=now + LEASE, **values, **_EMPTY)
        return cast(int, conn.execute(statement.returning(REPORTS.c.id)).scalar_one())


_EMPTY = {
    "windows": 0,
    "parts": 0,
    "messages": 0,
    "provider_counts": "{}",
    "our_counts": "{}",
    "added": 0,
    "updated": 0,
    "flagged": 0,
}


def renew(conn: Connection, report_id: int, now: datetime) -> None:
    conn.execute(update(REPORTS).where(REPORTS.c.id == report_id).values(lease_until=now + LEASE))


def finish(engine: Engine, report_id: int, values: Row, error: str | None, now: datetime) -> None:
    """Close the report with its counts (dicts stored as JSON); the lease ends."""
    row = {
        key: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
        for key, v in values.items()
    }
    with write_transaction(engine) as conn:
        conn.execute(
            update(REPORTS)
            .where(REPORTS.c.id == report_id)
            .values(
                **row,
                status="failed" if error else "done",
                error=error[:REPORT_ERROR_LENGTH] if error else None,
                finished_at=now,
                lease_until=None,
            )
        )
