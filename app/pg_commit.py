"""The writer's commit on PostgreSQL, in two network round trips.

Under load the writer spent 81% of its time waiting on PostgreSQL: a group
commit through SQLAlchemy is about ten round trips (ping, BEGIN, lock, two
reads, four writes, COMMIT), each one a wait for a backend that shares two
cores with the web server. psycopg's pipeline mode sends statements without
waiting for each answer; the server still runs them one after another, each
with its own snapshot, so the reads still run after the lock is held. Here:

1. BEGIN, the write lock, the two reads and the documents' ids, then one sync;
2. the plan (`ingest.plan_batch`, the same rules as every other write);
3. every insert and update, and COMMIT, then one sync.

The SQL is generated from the same tables as `bulk`; the rules live only in
`ingest`. SQLAlchemy's API has no pipeline, hence the driver connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import Dialect, Table

from app.bulk import Row, columns, unnest_insert_sql, unnest_update_sql
from app.db import WRITE_LOCK_KEY
from app.ingest import EVENTS, MESSAGES, Current, Key, Outcome, Submission, batch_ids, plan_batch
from app.models import Document

DOCUMENTS = cast(Table, Document.__table__)

LOCK = "SELECT pg_advisory_xact_lock(%s)"
LOAD_MESSAGES = (
    "SELECT id_sms, status, status_at, status_time_raw, source, conflict, num_parts, price, "
    "given_up_at "
    "FROM messages WHERE id_sms = ANY(%b::varchar[])"
)
LOAD_KEYS = "SELECT id_sms, status, time_raw FROM events WHERE id_sms = ANY(%b::varchar[])"
NEXT_DOCUMENT_IDS = (
    "SELECT nextval(pg_get_serial_sequence('documents', 'id')) FROM generate_series(1, %s)"
)


def commit_batch(
    raw: psycopg.Connection[Any], dialect: Dialect, submissions: Sequence[Submission], now: datetime
) -> list[Outcome]:
    """Store and commit the batch; raises (and leaves it rolled back) on any failure."""
    ids = batch_ids(submissions)
    with raw.pipeline():
        raw.execute(LOCK, (WRITE_LOCK_KEY,))
        messages = raw.execute(LOAD_MESSAGES, (ids,))
        keys = raw.execute(LOAD_KEYS, (ids,))
        wanted = sum(sub.body is not None for sub in submissions)
        allocated = raw.execute(NEXT_DOCUMENT_IDS, (wanted,))
        stored = {row[0]: Current(*row[1:]) for row in messages.fetchall()}
        seen: set[Key] = {(row[0], row[1], row[2]) for row in keys.fetchall()}
        new_ids = iter(row[0] for row in allocated.fetchall())
        plan = plan_batch(stored, seen, submissions, now)
        document_ids = [None if row is None else next(new_ids) for row in plan.documents]
        documents = [
            row | {"id": document_id}
            for row, document_id in zip(plan.documents, document_ids, strict=True)
            if row is not None
        ]
        _insert(raw, dialect, DOCUMENTS, documents)
        _insert(raw, dialect, MESSAGES, plan.new_messages)
        _update(raw, dialect, MESSAGES, "id_sms", plan.changed_messages)
        _insert(raw, dialect, EVENTS, plan.event_rows(document_ids))
        raw.commit()
    return plan.outcomes


def _insert(raw: psycopg.Connection[Any], dialect: Dialect, table: Table, rows: list[Row]) -> None:
    if rows:
        names = list(rows[0])
        raw.execute(unnest_insert_sql(table, names, dialect, "%"), columns(rows, names))


def _update(
    raw: psycopg.Connection[Any], dialect: Dialect, table: Table, key: str, rows: list[Row]
) -> None:
    if rows:
        names = list(rows[0])
        raw.execute(unnest_update_sql(table, key, names, dialect, "%"), columns(rows, names))
